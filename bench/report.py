"""Turns bench/results.json into the table in bench/README.md.

    /usr/bin/python3 bench/report.py     # re-render README.md from results.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- results: begin (written by bench/run.py) -->"
END = "<!-- results: end -->"


def _spread(summary: dict, scale: float = 1.0, digits: int = 0) -> str:
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(summary["median"] * scale)
    if len(summary.get("values", [])) < 2:
        return median
    return f"{median} ({fmt.format(summary['min'] * scale)}–{fmt.format(summary['max'] * scale)})"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs else "–"


class Table:
    def __init__(self):
        self.rows: list[str] = []

    def add(self, measure: str, baremail: str, peers: str, ratio: str, target: str, met) -> None:
        mark = {True: "**met**", False: "not met", None: "–"}[met]
        self.rows.append(f"| {measure} | {baremail} | {peers} | {ratio} | {target} | {mark} |")

    def text(self) -> str:
        head = ("| measure | BareMail | peers | ratio BareMail / peer | target | |\n"
                "|---|---|---|---|---|---|")
        return head + "\n" + "\n".join(self.rows)


def render(results: dict) -> str:
    table = Table()
    smtp = results.get("smtp")
    if smtp:
        for sessions, goal in (("10", 1.5), ("1", 1.2), ("50", 1.2)):
            row = smtp[sessions]
            better = max(("postfix", "aiosmtpd"), key=lambda name: row[name]["median"])
            ratio = row["baremail"]["median"] / row[better]["median"]
            table.add(f"SMTP, 2 KB messages accepted per second, {sessions} session{'s' if sessions != '1' else ''}",
                      _spread(row["baremail"]),
                      f"Postfix {_spread(row['postfix'])}; aiosmtpd {_spread(row['aiosmtpd'])}",
                      f"{ratio:.2f} (vs {better})", f"≥ {goal} × better peer", ratio >= goal)
    pop3 = results.get("pop3")
    if pop3:
        count = results["plan"]["pop3_small"]
        row = pop3["retr_small"]
        ratio = row["baremail"]["median"] / row["dovecot"]["median"]
        table.add(f"POP3 RETR {count:,} × 2 KB, pipelined in batches of 50, msg/s",
                  _spread(row["baremail"]), f"Dovecot {_spread(row['dovecot'])}",
                  f"{ratio:.2f}", "≥ 1.0 × Dovecot", ratio >= 1.0)
        row = pop3["retr_small_poplib"]
        table.add("… the same with a plain poplib client (one RETR at a time), msg/s",
                  _spread(row["baremail"]), f"Dovecot {_spread(row['dovecot'])}",
                  _ratio(row["baremail"]["median"], row["dovecot"]["median"]), "(for comparison)", None)
        count = results["plan"]["pop3_large"]
        row = pop3["retr_large"]
        ratio = row["baremail"]["median"] / row["dovecot"]["median"]
        table.add(f"POP3 RETR {count} × 1 MB, pipelined, MB/s", _spread(row["baremail"]),
                  f"Dovecot {_spread(row['dovecot'])}", f"{ratio:.2f}", "≥ 1.0 × Dovecot", ratio >= 1.0)
        warm, cold = pop3["login_stat_warm"], pop3["login_stat_cold"]
        ratio = warm["baremail"]["median"] / warm["dovecot"]["median"]
        small = results["plan"]["pop3_small"]
        table.add(f"login + STAT on {small:,} messages, ms (service running / Dovecot's index built)",
                  _spread(warm["baremail"], 1000, 1),
                  f"Dovecot warm {_spread(warm['dovecot'], 1000, 1)}; cold (index removed) "
                  f"{_spread(cold['dovecot'], 1000, 1)}",
                  f"{ratio:.2f}", "≤ Dovecot warm", ratio <= 1.0)
        table.add("… BareMail with its service not running (socket activation included), ms",
                  _spread(cold["baremail"], 1000, 1), "", "", "(for comparison)", None)
    start = results.get("start")
    if start:
        floor = start["import_floor"]["median"]
        for name in ("smtp", "pop3"):
            ours = start[f"baremail_{name}"]
            ratio = ours["median"] / floor
            table.add(f"cold start baremail-{name}: connect → greeting, ms", _spread(ours, 1000, 1),
                      f"import floor (python3 -c 'import asyncio, systemd.daemon, systemd.journal, "
                      f"sdnotify') {_spread(start['import_floor'], 1000, 1)}",
                      f"{ratio:.2f}", "≤ 1.3 × import floor", ratio <= 1.3)
        if "floor_plain" in start:
            table.add("… the floor program itself socket-activated, ms: plain unit / under BareMail's sandbox",
                      "", f"{_spread(start['floor_plain'], 1000, 1)} / {_spread(start['floor_sandboxed'], 1000, 1)}",
                      _ratio(start["baremail_smtp"]["median"], start["floor_sandboxed"]["median"])
                      + " (smtp vs sandboxed floor)", "(explains the row above)", None)
    rss = results.get("idle_rss")
    if rss:
        dovecot = rss["dovecot"]["median"]
        for name in ("baremail-smtp", "baremail-pop3"):
            ratio = rss[name]["median"] / dovecot
            table.add(f"idle RSS of {name} after one session, MB", _spread(rss[name], 1 / 1024, 1),
                      f"Dovecot {_spread(rss['dovecot'], 1 / 1024, 1)} ({rss['dovecot']['processes'][0]} processes); "
                      f"aiosmtpd {_spread(rss['aiosmtpd'], 1 / 1024, 1)}; Postfix "
                      f"{_spread(rss['postfix'], 1 / 1024, 1)} ({rss['postfix']['processes'][0]} processes)",
                      f"{ratio:.2f} (vs Dovecot)", "≤ Dovecot", ratio <= 1.0)
    idle = results.get("idle_sessions")
    if idle:
        count = results["plan"]["idle_sessions"]
        ours = idle["baremail"]["per_session_kb"]
        table.add(f"RSS per idle SMTP session, {count:,} held, KB", _spread(ours, 1, 2),
                  f"aiosmtpd {_spread(idle['aiosmtpd']['per_session_kb'], 1, 2)}",
                  _ratio(ours["median"], idle["aiosmtpd"]["per_session_kb"]["median"]), "≤ 5 KB",
                  ours["median"] <= 5)
        ours = idle["baremail"]["greeting"]
        theirs = idle["aiosmtpd"]["greeting"]
        table.add(f"greeting of a fresh client beside {count:,} idle sessions, ms", _spread(ours, 1000, 2),
                  f"aiosmtpd {_spread(theirs, 1000, 2)}", _ratio(ours["median"], theirs["median"]),
                  "≤ aiosmtpd", ours["median"] <= theirs["median"])
    big = results.get("big")
    if big:
        size = results["plan"]["big"] / 1e6
        for name, what in (("baremail_smtp", "sending"), ("baremail_pop3", "retrieving")):
            table.add(f"RSS growth {what} a {size:.0f} MB message, MB", _spread(big[name], 1 / 1024, 1),
                      f"aiosmtpd (sending) {_spread(big['aiosmtpd_smtp'], 1 / 1024, 0)}" if name == "baremail_smtp" else "",
                      "", "≤ 2 MB", big[name]["median"] <= 2048)
    return table.text()


def machine_text(results: dict) -> str:
    m = results.get("machine", {})
    v = results.get("versions", {})
    load = results.get("load_average", {})
    lines = [
        f"- Measured {results.get('date', '?')} with `{results.get('command', 'make bench')}` "
        f"({results.get('seconds', {}).get('total', 0) / 60:.0f} min in all).",
        f"- Machine: {m.get('nproc')} CPUs ({m.get('cpu')}), {m.get('memory')}, {m.get('virtualization')} "
        f"virtual machine, Linux {m.get('kernel')}, {m.get('os')}.",
        f"- Disk: {m.get('filesystem')}{'; ' + m['disk'] if m.get('disk') else ''}; the container's "
        f"files (and so every Maildir and queue) live there. After emptying a Maildir the benchmark "
        f"syncs, so that the trims of \"discard\" happen outside the timed runs.",
        f"- Software in the container: BareMail {v.get('baremail')}, Postfix {v.get('postfix')}, "
        f"Dovecot {v.get('dovecot')}, aiosmtpd {v.get('aiosmtpd')}, Python {v.get('python3')}.",
    ]
    if load:
        lines.append(f"- Host load average (1, 5, 15 min) before / after measuring: "
                     f"{' '.join(f'{x:.2f}' for x in load['before'])} / "
                     f"{' '.join(f'{x:.2f}' for x in load['after'])}.")
    return "\n".join(lines)


def section(results: dict, table: str) -> str:
    plan = results.get("plan", {})
    return (f"{BEGIN}\n\n{table}\n\nMedians of {plan.get('repetitions', '?')} runs "
            f"({plan.get('smtp_repetitions', '?')} for SMTP, {plan.get('pop3_repetitions', '?')} for "
            f"POP3 retrieval, {plan.get('starts', '?')} for cold starts), min–max in brackets; "
            f"ratios are of medians.\n\n{machine_text(results)}\n\n{END}")


def update_readme(path: Path, table: str, results: dict | None = None) -> None:
    if results is None:
        results = json.loads((HERE / "results.json").read_text())
    text = path.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    path.write_text(text[:start] + section(results, table) + text[end:])


def main() -> int:
    results = json.loads((HERE / "results.json").read_text())
    table = render(results)
    update_readme(HERE / "README.md", table, results)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
