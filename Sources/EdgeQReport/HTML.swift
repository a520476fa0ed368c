import EdgeQLog
import Foundation

// The page: header (the verdict), the log's summary, then one figure per question. Each plot is
// a `<figure class="plot" data-plot="NAME" data-points="N">` whose SVG draws N points (bars,
// markers, intervals); a plot with nothing to draw says why in words instead.

extension RunReport {
    /// The whole page.
    public func html() -> String {
        var b = ""
        let a = aggregates
        let span = (a.firstTime, a.lastTime)
        b += """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8">
            <meta name="viewport" content="width=device-width, initial-scale=1">
            <title>EdgeQ run report — \(esc(gatewayID))</title>
            <style>\(Self.css)</style></head><body>
            <header id="verdict" data-answer="\(verdict.answer.rawValue)" data-source="\(verdict.source.rawValue)"\
             data-difference="\(attr(verdict.difference))" data-low="\(attr(verdict.low))" data-high="\(attr(verdict.high))"\
             data-confidence="\(attr(verdict.confidence))" data-unit="\(esc(verdict.unit))">
            <p class="kicker">EdgeQ run report · gateway <b>\(esc(gatewayID))</b> · \(esc(dataDirectory.path)) · \
            \(span.0.map { "\(Self.date($0)) – \(Self.date(span.1 ?? $0)) UTC" } ?? "empty log")\
            \(history.mode.map { " · mode <b id=\"mode\">\(esc($0.mode))</b> since \(Self.date($0.since)) UTC (\(esc($0.reason)))" } ?? "")</p>
            <h1>Is EdgeQ better than the incumbent here?</h1>
            <p class="answer \(verdict.answer.rawValue)" id="verdict-headline">\(esc(verdict.headline))</p>
            <p class="method">\(esc(verdict.method))</p>
            <div class="figures">
            """
        b += figureBox("log rows", "\(a.rows)", id: "rows", value: Double(a.rows))
        let ag = agreement
        b += figureBox("shadow agreement", ag.compared > 0 ? String(format: "%.1f %%", Double(ag.agreed) / Double(ag.compared) * 100) : "—",
                       id: "agreement", value: ag.compared > 0 ? Double(ag.agreed) / Double(ag.compared) : nil,
                       extra: "data-compared=\"\(ag.compared)\" data-agreed=\"\(ag.agreed)\"")
        b += figureBox("EdgeQ in control, mean reward per tick", ticks.edgeqMean.map { fmt($0) } ?? "—", id: "edgeq-mean", value: ticks.edgeqMean,
                       extra: "data-rows=\"\(ticks.edgeqRows)\"")
        b += figureBox("incumbent, mean reward per tick", ticks.incumbentMean.map { fmt($0) } ?? "—", id: "incumbent-mean", value: ticks.incumbentMean,
                       extra: "data-rows=\"\(ticks.incumbentRows)\"")
        b += figureBox("difference per tick (95 % batch-means interval)",
                       ticks.difference.map { fmt($0, sign: true) + (ticks.low.map { " (\(fmt($0)) … \(fmt(ticks.high ?? $0)))" } ?? "") } ?? "—",
                       id: "tick-difference", value: ticks.difference,
                       extra: "data-low=\"\(attr(ticks.low))\" data-high=\"\(attr(ticks.high))\"")
        b += figureBox("trials decided", "\(history.trials.filter { $0.verdict != "abandoned" }.count)", id: "trials",
                       value: Double(history.trials.filter { $0.verdict != "abandoned" }.count))
        b += "</div></header><main>\n"

        // Summary table.
        b += "<section><h2>Who decided, in which mode</h2><table id=\"groups\"><tr><th>mode</th><th>actor</th><th>rows</th><th>mean reward per tick</th></tr>"
        for g in groups {
            b += "<tr class=\"group\" data-mode=\"\(g.mode)\" data-actor=\"\(g.actor)\" data-rows=\"\(g.rows)\" data-mean=\"\(attr(g.meanReward))\">"
                + "<td>\(g.mode)</td><td>\(g.actor)</td><td>\(g.rows)</td><td>\(fmt(g.meanReward))</td></tr>"
        }
        b += "</table><p class=\"note\">One row per transition (docs/log.md). <i>mode</i> is who was in charge on that tick: shadow — the incumbent (also in the incumbent's blocks of a trial or of the guard while the gateway is in control mode), control — EdgeQ. <i>actor</i> is who chose the action applied: the incumbent, the model, an exploration, or the safety fallback.</p></section>\n"

        b += rewardPlot()
        b += agreementPlot()
        b += timelinePlot()
        b += retrainingSection()
        b += trialSection()
        b += latencyPlot()
        b += fallbackPlot()
        b += auditSection()
        if !history.problems.isEmpty {
            b += "<section><h2>Files that could not be read</h2><ul>" + history.problems.map { "<li>\(esc($0))</li>" }.joined() + "</ul></section>"
        }
        b += "<footer>Made by <code>edgeq report</code> at \(Self.date(generated)) UTC from the log (SQL aggregates in \(a.bucketCount) time buckets of \(fmt(a.bucketSeconds)) s), the model store and the audit table. Self-contained: no script, no network.</footer>"
        b += "</main></body></html>\n"
        return b
    }

    func figureBox(_ label: String, _ text: String, id: String, value: Double?, extra: String = "") -> String {
        "<div class=\"figure\" id=\"fig-\(id)\" data-value=\"\(attr(value))\" \(extra)><span class=\"v\">\(esc(text))</span><span class=\"l\">\(esc(label))</span></div>"
    }

    // MARK: - Plots

    func rewardPlot() -> String {
        let a = aggregates
        var series: [Series] = []
        for m in ["shadow", "control"] {
            for (i, actor) in Self.actors.enumerated() {
                let pts = a.cells.filter { $0.mode == m && $0.actor == actor && $0.rows > 0 }
                    .map { (a.bucketStart + (Double($0.bucket) + 0.5) * a.bucketSeconds, $0.rewardSum / Double($0.rows)) }
                if !pts.isEmpty {
                    series.append(Series(name: "\(m) · \(actor)", color: Self.palette[(m == "shadow" ? 0 : 4) + i], dashed: m == "shadow", points: pts))
                }
            }
        }
        return section("Reward over time, by mode and actor",
                       lineChart("reward", series, yLabel: "mean reward per tick"),
                       note: "Mean reward per tick in each time bucket, one line per mode and actor (dashed: shadow mode, the incumbent in charge).")
    }

    func agreementPlot() -> String {
        let a = aggregates
        var byBucket: [Int: (Int, Int)] = [:]
        for c in a.cells where c.mode == "shadow" && c.compared > 0 {
            byBucket[c.bucket, default: (0, 0)].0 += c.compared
            byBucket[c.bucket, default: (0, 0)].1 += c.agreed
        }
        let pts = byBucket.keys.sorted().map { k in
            (a.bucketStart + (Double(k) + 0.5) * a.bucketSeconds, Double(byBucket[k]!.1) / Double(byBucket[k]!.0) * 100)
        }
        return section("Shadow agreement with the incumbent",
                       lineChart("agreement", [Series(name: "model's choice = incumbent's action", color: Self.palette[1], dashed: false, points: pts)],
                                 yLabel: "% of compared shadow ticks", yRange: (0, 100),
                                 empty: "No shadow tick with both the incumbent's action and the model's choice (no model was served in shadow mode, or the incumbent's commands were not observed)."),
                       note: "In shadow mode the gateway runs the served model beside the incumbent: the share of ticks where the model's masked greedy choice equals the incumbent's observed action.")
    }

    func timelinePlot() -> String {
        var events: [TimelineEvent] = []
        for r in history.retrainings {
            if let t = r.started { events.append(TimelineEvent(time: t, lane: "retraining", label: "v\(r.version) retrained: \(r.verdict)", color: r.verdict == "passed" ? "#2b8a3e" : "#c92a2a")) }
        }
        for t in history.trials {
            if let time = t.time { events.append(TimelineEvent(time: time, lane: "trial", label: "trial of v\(t.version) against \(t.reference): \(t.verdict)", color: t.verdict == "promote" ? "#2b8a3e" : "#e67700")) }
        }
        for s in history.switches {
            // A start-up fallback serves an earlier version, as a rollback does.
            let lane = s.kind == "guard trip" ? "guard trip" : (s.kind == "promotion" ? "promotion" : "rollback")
            events.append(TimelineEvent(time: s.time, lane: lane, label: "\(s.kind): serve \(s.version.map { "v\($0)" } ?? "no model") — \(s.reason)",
                                        color: lane == "promotion" ? "#1971c2" : "#c92a2a"))
        }
        for q in history.quarantines {
            events.append(TimelineEvent(time: q.time, lane: "quarantine", label: "v\(q.version) quarantined: \(q.reason)", color: "#862e9c"))
            if q.reason.hasPrefix("guard"), !history.switches.contains(where: { $0.kind == "guard trip" && abs($0.time - q.time) < 2 }) {
                events.append(TimelineEvent(time: q.time, lane: "guard trip", label: "guard trip: v\(q.version) back to shadow", color: "#c92a2a"))
            }
        }
        for e in aggregates.auditEvents {
            events.append(TimelineEvent(time: e.time, lane: "command", label: "cmd/\(e.verb) by \(e.key ?? "?"): \(e.command ?? "")\(e.ok == false ? " (failed: \(e.error ?? ""))" : "")", color: "#495057"))
        }
        let lanes = ["command", "retraining", "trial", "promotion", "rollback", "guard trip", "quarantine"]
        return section("Timeline: retrainings, trials, promotions, rollbacks, quarantines, guard trips, commands",
                       timeline(events, lanes: lanes),
                       note: "From the model store (models/vN/report.json, trial.json, quarantined; models/served.log: every switch of the served model with its reason) and the audit table (accepted mode, retrain, promote and rollback commands). Retrainings whose candidate failed its checks store no version and are not on disk: their results are in the gateway's log and on <prefix>/retrain.")
    }

    func retrainingSection() -> String {
        var b = "<section><h2>Retrainings and their checks</h2>"
        if history.retrainings.isEmpty {
            b += "<p class=\"empty\">No stored version has a retraining report.</p>"
        }
        for r in history.retrainings {
            b += "<h3>v\(r.version): \(esc(r.verdict))\(r.started.map { " · \(Self.date($0)) UTC" } ?? "")\(r.rows.map { " · \($0) rows" } ?? "")\(r.seconds.map { " · \(fmt($0)) s" } ?? "")\(r.warmStart == true ? " · warm start" : "")</h3>"
            if r.checks.isEmpty {
                b += "<p class=\"note\">The report lists no checks (a version stored by hand or imported).</p>"
                continue
            }
            b += "<table class=\"checks\" data-version=\"\(r.version)\"><tr><th>check</th><th>value</th><th>limit</th><th>status</th><th>what</th></tr>"
            for c in r.checks {
                b += "<tr class=\"\(c.status)\"><td>\(esc(c.name))</td><td>\(c.value.map { fmt($0) } ?? "—")</td><td>\(c.limit.map { fmt($0) } ?? "—")</td><td>\(esc(c.status))</td><td>\(esc(c.note))</td></tr>"
            }
            b += "</table>"
        }
        return b + "</section>\n"
    }

    func trialSection() -> String {
        var b = "<section><h2>Switchback trials: blocks and confidence intervals</h2>"
        let decided = history.trials
        b += intervalChart(decided)
        if !decided.isEmpty {
            b += "<table id=\"trials\"><tr><th>candidate</th><th>reference</th><th>verdict</th><th>block pairs</th><th>void pairs</th><th>ticks</th><th>candidate block return</th><th>reference block return</th><th>difference</th><th>interval</th><th>cost</th></tr>"
            for t in decided {
                b += "<tr class=\"trial\" data-version=\"\(t.version)\" data-pairs=\"\(t.pairs)\" data-low=\"\(attr(t.ciLow))\" data-high=\"\(attr(t.ciHigh))\">"
                    + "<td>v\(t.version)</td><td>\(esc(t.reference))</td><td>\(esc(t.verdict))\(t.promoted ? " (promoted)" : "")</td><td>\(t.pairs)</td><td>\(t.voidPairs)</td><td>\(t.ticks)</td>"
                    + "<td>\(t.candidateMean.map { fmt($0) } ?? "—")</td><td>\(t.referenceMean.map { fmt($0) } ?? "—")</td><td>\(t.meanDifference.map { fmt($0, sign: true) } ?? "—")</td>"
                    + "<td>\(t.ciLow.map { fmt($0) } ?? "—") … \(t.ciHigh.map { fmt($0) } ?? "—")\(t.confidence.map { " (\(fmt($0 * 100)) %)" } ?? "")</td><td>\(t.cost.map { fmt($0) } ?? "—")</td></tr>"
            }
            b += "</table>"
        }
        for t in decided {
            if let runs = trialRuns[t.version], !runs.isEmpty { b += runChart(t, runs) }
        }
        b += "<p class=\"note\">Each trial's file keeps its summary: scored block pairs (a void pair had a block with fewer than half its ticks scored), ticks, the mean block return of each arm and the interval on their difference. The return of each single block is published on &lt;prefix&gt;/retrain as the trial goes (event <code>progress</code>) and is not kept on disk; the strips show the trial's blocks as the log has them: from the candidate's first to its last tick of the trial, cut where the controller changes (adjacent blocks of one arm make one run; a reference block before the first or after the last candidate block cannot be told from the reference running before or after the trial and is left out; burn-in ticks are included, so a run's mean is not exactly what the trial scored).</p>"
        return b + "</section>\n"
    }

    func latencyPlot() -> String {
        guard let m = metrics, !m.decisionBuckets.isEmpty else {
            return section("Decision latency", "<figure class=\"plot\" data-plot=\"latency\" data-points=\"0\"><p class=\"empty\">Not recorded on disk: the log has no latency column. The gateway measures it in the histogram <code>edgeq_decision_seconds</code> on its <code>/metrics</code> endpoint; save a scrape (<code>curl -s http://HOST:PORT/metrics &gt; metrics.prom</code>) and pass it with <code>--metrics metrics.prom</code> to draw it here.</p></figure>", note: nil)
        }
        var bars: [(String, Double)] = []
        var lower = 0.0
        for (le, c) in m.decisionBuckets {
            bars.append((le.isInfinite ? "> \(Self.seconds(lower))" : "≤ \(Self.seconds(le))", c))
            if le.isFinite { lower = le }
        }
        let mean = m.decisionCount.flatMap { n in n > 0 ? m.decisionSum.map { $0 / n } : nil }
        return section("Decision latency (from the metrics snapshot)",
                       barChart("latency", bars, yLabel: "decisions"),
                       note: "edgeq_decision_seconds: trigger message arrival (or period tick) → decision published; \(Int(m.decisionCount ?? 0)) decisions\(mean.map { ", mean \(Self.seconds($0))" } ?? ""). From the scrape given with --metrics, covering that gateway process's life only.")
    }

    func fallbackPlot() -> String {
        var b = section("Fallbacks (from the log)",
                        barChart("fallbacks", fallbackKinds.map { ($0.kind, Double($0.rows)) }, yLabel: "fallback rows"),
                        note: "Rows whose actor is the safety fallback, by what the log tells of the cause. The exact reason (stale, invalid, out_of_distribution, hand_override, non_finite_q, no_allowed_action, no_model, watchdog, render_failed) is counted only in edgeq_fallbacks_total{reason} on /metrics\(metrics == nil ? "; pass a saved scrape with --metrics to show it." : ", below.")")
        if let m = metrics, !m.fallbacksByReason.isEmpty {
            b += section("Fallbacks by reason (from the metrics snapshot)",
                         barChart("fallback-reasons", m.fallbacksByReason.map { ($0.reason, $0.count) }, yLabel: "fallbacks"),
                         note: "edgeq_fallbacks_total{reason} in the scrape given with --metrics (that gateway process's life only).")
        }
        return b
    }

    func auditSection() -> String {
        var b = "<section><h2>Control-plane commands (audit)</h2>"
        if aggregates.auditCounts.isEmpty { return b + "<p class=\"empty\">No command in the audit table.</p></section>\n" }
        b += "<table id=\"audit\"><tr><th>verb</th><th>result</th><th>reason</th><th>commands</th></tr>"
        for c in aggregates.auditCounts {
            b += "<tr><td>\(esc(c.verb))</td><td>\(esc(c.result))</td><td>\(esc(c.reason ?? ""))</td><td>\(c.count)</td></tr>"
        }
        return b + "</table></section>\n"
    }

    func section(_ title: String, _ body: String, note: String?) -> String {
        "<section><h2>\(esc(title))</h2>\(body)\(note.map { "<p class=\"note\">\(esc($0))</p>" } ?? "")</section>\n"
    }

    // MARK: - Formatting

    static func date(_ t: Double) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd HH:mm:ss"
        return f.string(from: Date(timeIntervalSince1970: t))
    }

    static func seconds(_ s: Double) -> String {
        s >= 1 ? "\(fmt(s)) s" : (s >= 1e-3 ? "\(fmt(s * 1e3)) ms" : "\(fmt(s * 1e6)) µs")
    }

    static let palette = ["#868e96", "#1971c2", "#e67700", "#c92a2a", "#495057", "#2b8a3e", "#f08c00", "#e03131"]

    static let css = """
        body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#212529;background:#f8f9fa}
        header{background:#fff;border-bottom:1px solid #dee2e6;padding:18px 28px}
        .kicker{color:#868e96;margin:0}h1{font-size:22px;margin:6px 0}
        .answer{font-size:18px;font-weight:600;margin:6px 0}.answer.better{color:#2b8a3e}.answer.worse{color:#c92a2a}
        .answer.not_shown,.answer.unknown{color:#e67700}.method{color:#495057;max-width:1100px}
        .figures{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
        .figure{background:#f1f3f5;border-radius:6px;padding:8px 12px;min-width:150px}
        .figure .v{display:block;font-size:18px;font-weight:600}.figure .l{color:#868e96;font-size:12px}
        main{padding:8px 28px 28px;max-width:1200px}section{background:#fff;border:1px solid #dee2e6;border-radius:6px;padding:12px 16px;margin:14px 0}
        h2{font-size:16px;margin:4px 0 8px}h3{font-size:14px;margin:10px 0 4px}
        table{border-collapse:collapse;font-size:13px}td,th{border-bottom:1px solid #e9ecef;padding:3px 8px;text-align:left}
        tr.failed td{color:#c92a2a}tr.not_applicable td{color:#868e96}tr.advisory td{color:#868e96;font-style:italic}
        .note{color:#868e96;font-size:12px;margin:6px 0 0}.empty{color:#e67700}
        figure{margin:0}svg{display:block;max-width:100%;height:auto}.legend span{margin-right:14px;font-size:12px}
        .legend i{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:4px}
        footer{color:#868e96;font-size:12px;margin-top:14px}
        """
}

/// HTML text escaping.
func esc(_ s: String) -> String {
    var out = ""
    out.reserveCapacity(s.count)
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}

/// A number in an attribute: full precision (for tests and scripts), empty when unknown.
func attr(_ x: Double?) -> String {
    guard let x, x.isFinite else { return "" }
    return "\(x)"
}
