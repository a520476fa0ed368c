#!/usr/bin/env python3
"""Writes edgeq(1), the manual page, from the command line's own help.

    python3 scripts/manpage.py EDGEQ_BINARY > edgeq.1

The help comes from `EDGEQ_BINARY --experimental-dump-help` (swift-argument-parser's JSON of every
command, its abstract, discussion and arguments), so the page says exactly what `edgeq --help` and
`edgeq help SUBCOMMAND` say. Hidden commands and arguments (developer tools) are left out.
`make install` and `make deb` run this; `man -l edgeq.1` shows the result.
"""
import datetime
import json
import os
import subprocess
import sys


def roff(text):
    """Escapes text for roff: backslashes, and a leading dot or quote that would read as a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def argument_synopsis(arg):
    """`--name <value>`, `--flag`, `<positional>` as the help's usage line writes them."""
    value = arg.get("valueName", "")
    if arg["kind"] == "positional":
        text = f"<{value}>"
    else:
        pref = arg.get("preferredName") or arg["names"][0]
        dash = "--" if pref["kind"] == "long" else "-"
        text = dash + pref["name"]
        if arg["kind"] == "option":
            text += f" <{value}>"
    if arg.get("isRepeating"):
        text += " ..."
    if arg.get("isOptional"):
        text = f"[{text}]"
    return text


def argument_names(arg):
    """Every spelling of an option or flag, e.g. `-h, --help`."""
    if arg["kind"] == "positional":
        return f"<{arg.get('valueName', '')}>"
    spellings = []
    for n in arg.get("names", []):
        dash = "--" if n["kind"] == "long" else "-"
        spellings.append(dash + n["name"])
    text = ", ".join(spellings)
    if arg["kind"] == "option":
        text += f" <{arg.get('valueName', '')}>"
    return text


def visible(items):
    return [i for i in items if i.get("shouldDisplay", True)]


def command_section(cmd, path, out):
    """One subcommand: its usage, abstract, discussion and options; then its own subcommands."""
    name = " ".join(path)
    args = visible(cmd.get("arguments", []))
    out.append(f".SS {roff(name)}")
    synopsis = " ".join(argument_synopsis(a) for a in args if a.get("valueName") not in ("help", "version"))
    out.append(f".B {roff(name)}")
    if synopsis:
        out.append(roff(synopsis))
    out.append(".PP")
    if cmd.get("abstract"):
        out.append(roff(cmd["abstract"]))
    if cmd.get("discussion"):
        out.append(".PP")
        out.append(roff(cmd["discussion"]))
    for a in args:
        if a.get("valueName") in ("help", "version"):
            continue
        out.append(".TP")
        out.append(f".B {roff(argument_names(a))}")
        text = a.get("abstract", "")
        if a.get("allValues"):
            text += f" (values: {', '.join(a['allValues'])})"
        if "defaultValue" in a:
            text += f" (default: {a['defaultValue']})"
        out.append(roff(text.strip()) or "\\&")
    for sub in visible(cmd.get("subcommands", [])):
        if sub["commandName"] == "help":
            continue
        command_section(sub, path + [sub["commandName"]], out)


def manual(tool, version):
    root = tool["command"]
    out = []
    date = datetime.datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")) or datetime.datetime.now().timestamp(),
                                           tz=datetime.timezone.utc).strftime("%Y-%m-%d")
    out.append(f'.TH EDGEQ 1 "{date}" "edgeq {roff(version)}" "EdgeQ manual"')
    out.append(".SH NAME")
    out.append(f"edgeq \\- {roff(root.get('abstract', ''))}")
    out.append(".SH SYNOPSIS")
    out.append(".B edgeq")
    out.append("<subcommand> [options]")
    out.append(".SH DESCRIPTION")
    out.append(roff(root.get("discussion", "")))
    out.append(".PP")
    out.append("Each subcommand's help is also printed by \\fBedgeq help\\fR \\fIsubcommand\\fR.")
    out.append(".SH COMMANDS")
    for sub in visible(root.get("subcommands", [])):
        if sub["commandName"] == "help":
            continue
        command_section(sub, ["edgeq", sub["commandName"]], out)
    out.append(".SH FILES")
    out.append(".TP")
    out.append(".B /etc/edgeq/NAME.yaml")
    out.append("The mapping file of the service instance \\fBedgeq@NAME.service\\fR.")
    out.append(".TP")
    out.append(".B /var/lib/edgeq/NAME")
    out.append("Its data directory: experience log, models, keys, state.")
    out.append(".TP")
    out.append(".B /usr/share/edgeq")
    out.append("Example mappings (topics/) and deploy files (deploy/); \\fBEDGEQ_SHARE\\fR names another folder.")
    out.append(".SH ENVIRONMENT")
    out.append(".TP")
    out.append(".B EDGEQ_SHARE")
    out.append("The folder holding topics/ and deploy/ (searched before the installed one and the checkout).")
    out.append(".TP")
    out.append(".B NOTIFY_SOCKET, WATCHDOG_USEC")
    out.append("Set by systemd: \\fBedgeq run\\fR sends READY=1, WATCHDOG=1 and STOPPING=1.")
    out.append(".SH SEE ALSO")
    out.append("systemd.service(5), mosquitto(8); docs/operations.md and docs/mapping.md of the source.")
    return "\n".join(out) + "\n"


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: manpage.py EDGEQ_BINARY > edgeq.1")
    binary = sys.argv[1]
    tool = json.loads(subprocess.run([binary, "--experimental-dump-help"], check=True, capture_output=True).stdout)
    version = subprocess.run([binary, "--version"], check=True, capture_output=True, text=True).stdout.strip()
    sys.stdout.write(manual(tool, version))


if __name__ == "__main__":
    main()
