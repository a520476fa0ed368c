#!/usr/bin/env python3
"""Opens an `edgeq report` page in a real headless browser and checks it against the data
directory it was made from, read independently here (Python's sqlite3 and json).

    report-browser-check.py --page FILE.html --data DIR [--screenshot FILE.png] [--browser PATH]

Checks: the page loads with no console error, no page error and no network request (it must be
self-contained); every plot (`figure.plot`) has data-points > 0 and as many drawn elements; the
header's numbers equal what the log and the model store say (rows, shadow agreement, mean reward
per tick of EdgeQ in control and of the incumbent, the table by mode and actor, and the verdict:
the newest decided trial against the incumbent, or the per-tick difference). Prints one JSON object; exit 0
when every check passed, 1 otherwise, 2 when the browser cannot be started.

Uses Playwright for Python with the system's Chromium (Debian's chromium-headless-shell or
chromium): it never downloads a browser. scripts/setup.sh installs both.
"""
import argparse
import glob
import json
import math
import os
import shutil
import sqlite3
import sys


def close(a, b, rel=1e-9):
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)


def num(s):
    return None if s in (None, "") else float(s)


def find_browser(given):
    if given:
        return given
    for name in ("chromium-headless-shell", "chromium"):
        for d in ("/usr/bin", "/usr/lib/chromium"):
            p = os.path.join(d, name)
            if os.path.exists(p):
                return p
        p = shutil.which(name)
        if p:
            return p
    return None


def expected(data):
    """What the page must say, from the data directory alone."""
    con = sqlite3.connect(f"file:{os.path.join(data, 'experience.sqlite')}?mode=ro", uri=True)
    q = lambda sql: con.execute(sql).fetchone()
    e = {"rows": q("SELECT count(*) FROM transitions")[0]}
    compared, agreed = q("SELECT count(*), total(action = model_action) FROM transitions "
                         "WHERE mode = 'shadow' AND action IS NOT NULL AND model_action IS NOT NULL")
    e["compared"], e["agreed"] = compared, int(agreed)
    e["edgeq_mean"] = q("SELECT avg(reward) FROM transitions WHERE mode = 'control' AND actor != 'incumbent'")[0]
    e["incumbent_mean"] = q("SELECT avg(reward) FROM transitions WHERE actor = 'incumbent'")[0]
    e["groups"] = {(m, a): (n, r) for m, a, n, r in
                   con.execute("SELECT mode, actor, count(*), avg(reward) FROM transitions GROUP BY mode, actor")}
    trials = []
    for path in glob.glob(os.path.join(data, "models", "v*", "trial.json")):
        with open(path) as f:
            t = json.load(f)
        if t.get("verdict") != "abandoned" and t.get("ci_low") is not None and t.get("ci_high") is not None \
                and t.get("mean_difference") is not None:
            trials.append(t)
    trials.sort(key=lambda t: t.get("time") or 0)
    vs_incumbent = [t for t in trials if t.get("reference") == "incumbent"]
    e["trial"] = (vs_incumbent or [None])[-1]   # a trial between two models does not answer the header's question
    return e


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--page", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--screenshot")
    ap.add_argument("--browser")
    args = ap.parse_args()

    browser_path = find_browser(args.browser)
    if not browser_path:
        print(json.dumps({"ok": False, "failures": ["no chromium-headless-shell or chromium found: run scripts/setup.sh"]}))
        return 2
    from playwright.sync_api import sync_playwright

    failures, console, requests = [], [], []
    want = expected(args.data)
    page_url = "file://" + os.path.abspath(args.page)
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox"])
        except Exception as error:  # the browser is missing or does not start
            print(json.dumps({"ok": False, "failures": [f"cannot start {browser_path}: {error}"]}))
            return 2
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: console.append({"type": m.type, "text": m.text}))
        page.on("pageerror", lambda err: console.append({"type": "pageerror", "text": str(err)}))
        page.on("request", lambda r: None if r.url == page_url else requests.append(r.url))
        response = page.goto(page_url, wait_until="load")
        if response is not None and not response.ok:
            failures.append(f"loading the page: {response.status}")

        errors = [m for m in console if m["type"] in ("error", "pageerror")]
        if errors:
            failures.append(f"console errors: {errors}")
        if requests:
            failures.append(f"the page requested other resources (it must be self-contained): {requests}")

        plots = page.eval_on_selector_all("figure.plot", """els => els.map(e => ({
            plot: e.dataset.plot, points: Number(e.dataset.points),
            drawn: e.querySelectorAll('svg circle, svg rect.bar, svg line.interval').length}))""")
        if not plots:
            failures.append("no plot on the page")
        for pl in plots:
            if not pl["points"] > 0:
                failures.append(f"plot {pl['plot']} has no data (data-points {pl['points']})")
            if pl["drawn"] < pl["points"]:
                failures.append(f"plot {pl['plot']} draws {pl['drawn']} elements for {pl['points']} points")

        def data(selector, key):
            return page.eval_on_selector(selector, f"e => e.dataset['{key}']")

        header = {
            "rows": num(data("#fig-rows", "value")),
            "compared": num(data("#fig-agreement", "compared")),
            "agreed": num(data("#fig-agreement", "agreed")),
            "edgeq_mean": num(data("#fig-edgeq-mean", "value")),
            "incumbent_mean": num(data("#fig-incumbent-mean", "value")),
            "answer": data("#verdict", "answer"),
            "source": data("#verdict", "source"),
            "difference": num(data("#verdict", "difference")),
            "low": num(data("#verdict", "low")),
            "high": num(data("#verdict", "high")),
            "headline": page.inner_text("#verdict-headline"),
        }
        if header["rows"] != want["rows"]:
            failures.append(f"rows: page {header['rows']}, log {want['rows']}")
        if header["compared"] != want["compared"] or header["agreed"] != want["agreed"]:
            failures.append(f"agreement: page {header['agreed']}/{header['compared']}, log {want['agreed']}/{want['compared']}")
        for k in ("edgeq_mean", "incumbent_mean"):
            if not close(header[k], want[k]):
                failures.append(f"{k}: page {header[k]}, log {want[k]}")
        groups = page.eval_on_selector_all("tr.group", "els => els.map(e => [e.dataset.mode, e.dataset.actor, Number(e.dataset.rows), Number(e.dataset.mean)])")
        seen = {(m, a): (n, r) for m, a, n, r in groups}
        if set(seen) != set(want["groups"]):
            failures.append(f"groups: page {sorted(seen)}, log {sorted(want['groups'])}")
        for key, (n, r) in want["groups"].items():
            if key in seen and (seen[key][0] != n or not close(seen[key][1], r)):
                failures.append(f"group {key}: page {seen[key]}, log {(n, r)}")

        t = want["trial"]
        if t is not None:
            if header["source"] != "trial":
                failures.append(f"verdict source: page {header['source']}, expected trial (a decided trial against the incumbent exists)")
            for k, tk in (("difference", "mean_difference"), ("low", "ci_low"), ("high", "ci_high")):
                if not close(header[k], t[tk]):
                    failures.append(f"verdict {k}: page {header[k]}, trial.json {t[tk]}")
            answer = "better" if t["ci_low"] > 0 else ("worse" if t["ci_high"] < 0 else "not_shown")
            if header["answer"] != answer:
                failures.append(f"verdict answer: page {header['answer']}, trial.json says {answer}")
        elif want["edgeq_mean"] is not None and want["incumbent_mean"] is not None:
            if header["source"] != "per_tick" or not close(header["difference"], want["edgeq_mean"] - want["incumbent_mean"]):
                failures.append(f"per-tick verdict: page {header['source']} {header['difference']}, log {want['edgeq_mean'] - want['incumbent_mean']}")
        elif header["answer"] != "unknown":
            failures.append(f"verdict: page {header['answer']}, but nothing in the directory can answer it")

        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()

    print(json.dumps({"ok": not failures, "failures": failures, "plots": plots, "header": header,
                      "console": console, "browser": browser_path}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
