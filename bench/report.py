"""Turns bench/results.json (and results-trixie.json) into the tables in bench/README.md.

    /usr/bin/python3 bench/report.py            # re-render README.md from the results files
    /usr/bin/python3 bench/report.py FILE.json  # print the table of one results file

Each release has its results file and its block in README.md: Debian 12
(bookworm) results.json and the block between BEGIN and END; Debian 13
(trixie) results-trixie.json and a block of its own, added after the
first when it is first written.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BEGIN = "<!-- results: begin (written by bench/run.py) -->"
END = "<!-- results: end -->"
DEFAULT_RELEASE = "bookworm"   # results without a "release" are from it
RELEASE_NAMES = {"bookworm": "Debian 12 (bookworm)", "trixie": "Debian 13 (trixie)"}


def release_of(results: dict) -> str:
    return results.get("release", DEFAULT_RELEASE)


def results_path(release: str) -> Path:
    return HERE / ("results.json" if release == DEFAULT_RELEASE else f"results-{release}.json")


def markers(release: str) -> tuple:
    if release == DEFAULT_RELEASE:
        return BEGIN, END
    return (f"<!-- results {release}: begin (written by bench/run.py) -->",
            f"<!-- results {release}: end -->")


def release_line(results: dict) -> str:
    release = release_of(results)
    inside = results.get("versions", {}).get("container") or ""
    # The container's own os-release, should it ever not be the release asked for.
    odd = f" (its os-release: {inside})" if inside and release not in inside else ""
    return f"Figures from a {RELEASE_NAMES.get(release, release)} container{odd}."


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
        for sessions, goal in (("10", 2.0), ("1", 1.5), ("50", 2.0)):
            row = smtp[sessions]
            better = max(("postfix", "aiosmtpd"), key=lambda name: row[name]["median"])
            ratio = row["baremail"]["median"] / row[better]["median"]
            table.add(f"SMTP, 2 KB messages accepted per second, {sessions} session{'s' if sessions != '1' else ''}",
                      _spread(row["baremail"]),
                      f"Postfix {_spread(row['postfix'])}; aiosmtpd {_spread(row['aiosmtpd'])}",
                      f"{ratio:.2f} (vs {better})", f"≥ {goal} × better peer", ratio >= goal)
            if sessions == "1" and "durable_creates" in smtp:
                floor = smtp["durable_creates"]
                table.add("… physical floor: durable creates per second on the same disk, one thread "
                          "(create in tmp/, write 2 KB, fsync, rename into new/, fsync of new/)", "",
                          f"floor {_spread(floor)}",
                          _ratio(row["baremail"]["median"], floor["median"]) + " (BareMail 1 session / floor)",
                          "(for comparison)", None)
    pop3 = results.get("pop3")
    if pop3:
        count = results["plan"]["pop3_small"]
        row = pop3["retr_small"]
        ratio = row["baremail"]["median"] / row["dovecot"]["median"]
        table.add(f"POP3 RETR {count:,} × 2 KB, pipelined in batches of 50, msg/s",
                  _spread(row["baremail"]), f"Dovecot {_spread(row['dovecot'])}",
                  f"{ratio:.2f}", "≥ 1.2 × Dovecot", ratio >= 1.2)
        row = pop3["retr_small_poplib"]
        ratio = row["baremail"]["median"] / row["dovecot"]["median"]
        table.add("… the same with a plain poplib client (one RETR at a time), msg/s",
                  _spread(row["baremail"]), f"Dovecot {_spread(row['dovecot'])}",
                  f"{ratio:.2f}", "≥ 1.0 × Dovecot", ratio >= 1.0)
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
    imap = results.get("imap")
    if imap:
        imap_rows(table, imap, results["plan"])
    start = results.get("start")
    if start:
        # The yardstick is the floor program socket-activated under the same sandbox
        # as BareMail's units; older result files only have the bare import floor.
        sandboxed = "floor_sandboxed" in start
        floor = start["floor_sandboxed" if sandboxed else "import_floor"]
        for name in ("smtp", "pop3"):
            ours = start[f"baremail_{name}"]
            ratio = ours["median"] / floor["median"]
            table.add(f"cold start baremail-{name}: connect → greeting, socket-activated, ms",
                      _spread(ours, 1000, 1),
                      ("floor program (imports asyncio, systemd.daemon, systemd.journal, sdnotify; greets) "
                       "under BareMail's sandbox " if sandboxed else "import floor ")
                      + _spread(floor, 1000, 1),
                      f"{ratio:.2f}", "≤ 1.0 × sandboxed floor" if sandboxed else "≤ 1.0 × floor",
                      ratio <= 1.0)
        if sandboxed:
            table.add("… the floor program as a plain unit (no sandbox) / bare imports in a shell, ms", "",
                      f"{_spread(start['floor_plain'], 1000, 1)} / {_spread(start['import_floor'], 1000, 1)}",
                      "", "(explains the row above)", None)
    rss = results.get("idle_rss")
    if rss:
        for name in ("baremail-smtp", "baremail-pop3"):
            ratio = rss[name]["median"] / rss["dovecot"]["median"]
            table.add(f"idle RSS of {name} after one session (its one process), MB",
                      _spread(rss[name], 1 / 1024, 1),
                      f"Dovecot {_spread(rss['dovecot'], 1 / 1024, 1)} ({rss['dovecot']['processes'][0]} processes); "
                      f"aiosmtpd {_spread(rss['aiosmtpd'], 1 / 1024, 1)}; Postfix "
                      f"{_spread(rss['postfix'], 1 / 1024, 1)} ({rss['postfix']['processes'][0]} processes)",
                      f"{ratio:.2f} (vs Dovecot)", "≤ 15 MB", rss[name]["median"] <= 15 * 1024)
        if "python_floor" in rss:
            table.add("… floor: python3 importing asyncio (ssl blocked), systemd.daemon, systemd.journal, "
                      "sdnotify / asyncio alone / python3 itself, MB", "",
                      " / ".join(_spread(rss[name], 1 / 1024, 1)
                                 for name in ("python_floor", "python_asyncio", "python_bare")),
                      "", "(explains the rows above)", None)
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


def imap_rows(table: Table, imap: dict, plan: dict) -> None:
    count = plan["imap_small"]
    warm, cold, first = imap["select_warm"], imap["select_cold"], imap["select_first"]
    ratio = warm["baremail"]["median"] / warm["dovecot"]["median"]
    table.add(f"IMAP SELECT INBOX of {count:,} messages, ms (service running / Dovecot's index built)",
              _spread(warm["baremail"], 1000, 2),
              f"Dovecot warm {_spread(warm['dovecot'], 1000, 2)}; cold (index removed) "
              f"{_spread(cold['dovecot'], 1000, 1)}", f"{ratio:.2f}", "≤ Dovecot warm", ratio <= 1.0)
    if "select_again" in imap:
        again = imap["select_again"]
        table.add("… SELECT again in the same session (Dovecot: its imap process already running), ms",
                  _spread(again["baremail"], 1000, 2), f"Dovecot {_spread(again['dovecot'], 1000, 2)}",
                  _ratio(again["baremail"]["median"], again["dovecot"]["median"]), "(for comparison)", None)
    table.add("… BareMail's first SELECT after a restart of its service (UID list read from disk), ms",
              _spread(cold["baremail"], 1000, 1), f"Dovecot cold {_spread(cold['dovecot'], 1000, 1)}",
              _ratio(cold["baremail"]["median"], cold["dovecot"]["median"]), "(for comparison)", None)
    table.add(f"… the very first SELECT after delivery ({count:,} in new/: moved to cur/, UIDs given), ms",
              _spread(first["baremail"], 1000, 0), f"Dovecot {_spread(first['dovecot'], 1000, 0)}",
              _ratio(first["baremail"]["median"], first["dovecot"]["median"]), "(for comparison)", None)
    second, once = imap["headers_second"], imap["headers_first"]
    ratio = second["baremail"]["median"] / second["dovecot"]["median"]
    table.add(f"IMAP UID FETCH 1:* (UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (From To "
              f"Subject Date Message-ID)]) over {count:,} × 2 KB, msg/s, second time",
              _spread(second["baremail"]), f"Dovecot {_spread(second['dovecot'])}", f"{ratio:.2f}",
              "≥ 1.0 × Dovecot second time", ratio >= 1.0)
    table.add("… the same, first time (BareMail's service restarted / Dovecot's index removed), msg/s",
              _spread(once["baremail"]), f"Dovecot {_spread(once['dovecot'])}",
              _ratio(once["baremail"]["median"], once["dovecot"]["median"]), "(reported)", None)
    flags = imap["flags"]
    ratio = flags["baremail"]["median"] / flags["dovecot"]["median"]
    table.add(f"IMAP flag resync, UID FETCH 1:* (FLAGS) over {count:,}, msg/s", _spread(flags["baremail"]),
              f"Dovecot {_spread(flags['dovecot'])}", f"{ratio:.2f}", "≥ 1.0 × Dovecot", ratio >= 1.0)
    bodies = imap["bodies"]
    ratio = bodies["baremail"]["median"] / bodies["dovecot"]["median"]
    table.add(f"IMAP BODY[] of {plan['imap_large']} × 1 MB (UID FETCH 1:* (BODY.PEEK[])), MB/s",
              _spread(bodies["baremail"]), f"Dovecot {_spread(bodies['dovecot'])}", f"{ratio:.2f}",
              "≥ 1.0 × Dovecot", ratio >= 1.0)
    wake = imap["wakeup"]
    ours = wake["baremail_smtp"]
    table.add(f"IMAP IDLE wake-up on the {count:,}-message INBOX: SMTP 250 → `* n EXISTS`, ms",
              _spread(ours, 1000, 1),
              f"Dovecot: Postfix's 250 → EXISTS {_spread(wake['dovecot_postfix'], 1000, 0)} "
              f"(its local delivery follows the 250)", "", "≤ 100 ms", ours["median"] <= 0.100)
    ours, theirs = wake["baremail_rename"], wake["dovecot_rename"]
    table.add("… file renamed into new/ → `* n EXISTS`, ms (both servers timed the same way)",
              _spread(ours, 1000, 1), f"Dovecot {_spread(theirs, 1000, 1)}",
              _ratio(ours["median"], theirs["median"]), "≤ Dovecot", ours["median"] <= theirs["median"])
    for name, target in (("idle_sessions", True), ("idle_sessions_full", False)):
        idle = imap.get(name)
        if not idle:
            continue
        held = plan["imap_idle_sessions" if target else "imap_idle_full"]
        ours, theirs = idle["baremail"], idle["dovecot"]
        measure = (f"RSS per idle IMAP session (logged in, a {ours['exists']:,}-message INBOX selected, "
                   f"in IDLE), {held:,} held, KB")
        table.add(measure if target else "… the same with the " + f"{ours['exists']:,}-message INBOX "
                  f"selected, {held:,} held, KB",
                  _spread(ours["per_session_kb"], 1, 1),
                  f"Dovecot {_spread(theirs['per_session_kb'], 1, 0)} RSS, "
                  f"{_spread(theirs['per_session_pss_kb'], 1, 0)} PSS "
                  f"({theirs['processes_per_session']:.1f} processes per session)",
                  _ratio(ours["per_session_kb"]["median"], theirs["per_session_pss_kb"]["median"])
                  + " (vs Dovecot's PSS)", "≤ 8 KB" if target else "(for comparison)",
                  ours["per_session_kb"]["median"] <= 8 if target else None)
    big = imap.get("big")
    if big:
        size = plan["imap_big"] / 1e6
        worst = max(big["bodystructure"]["median"], big["body"]["median"])
        table.add(f"RSS growth, IMAP BODYSTRUCTURE / then BODY[] of a {size:.0f} MB message "
                  f"(multipart, base64 attachment), MB",
                  f"{_spread(big['bodystructure'], 1 / 1024, 1)} / {_spread(big['body'], 1 / 1024, 1)}",
                  "", "", "≤ 2 MB", worst <= 2048)


def client_text(results: dict) -> str:
    imap = results.get("imap")
    if not imap:
        return ""
    shares = []
    for name, what in (("headers_second", "header fetch"), ("flags", "FLAGS"), ("bodies", "BODY[]")):
        rows = imap[name]
        shares.append(f"{what} {rows['baremail']['client_cpu_share']:.0%} against BareMail "
                      f"({rows['baremail'].get('receives', 0):,.0f} receives), "
                      f"{rows['dovecot']['client_cpu_share']:.0%} against Dovecot "
                      f"({rows['dovecot'].get('receives', 0):,.0f})")
    return ("The IMAP load client's own CPU time as a share of the wall time (the highest of any run), "
            "and the recv calls one answer took (median): " + "; ".join(shares) + ".\n\n")


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
        f"- Software in the container ({v.get('container') or RELEASE_NAMES.get(release_of(results))}): "
        f"BareMail {v.get('baremail')}, Postfix {v.get('postfix')}, "
        f"Dovecot {v.get('dovecot')}, aiosmtpd {v.get('aiosmtpd')}, Python {v.get('python3')}.",
    ]
    if load:
        lines.append(f"- Host load average (1, 5, 15 min) before / after measuring: "
                     f"{' '.join(f'{x:.2f}' for x in load['before'])} / "
                     f"{' '.join(f'{x:.2f}' for x in load['after'])}.")
    return "\n".join(lines)


def section(results: dict, table: str) -> str:
    plan = results.get("plan", {})
    begin, end = markers(release_of(results))
    imap = (f", {plan.get('imap_repetitions', '?')} for IMAP fetches, {plan.get('wakeups', '?')} "
            f"for IDLE wake-ups") if "imap" in results else ""
    return (f"{begin}\n\n{release_line(results)}\n\n{table}\n\nMedians of {plan.get('repetitions', '?')} runs "
            f"({plan.get('smtp_repetitions', '?')} for SMTP, {plan.get('pop3_repetitions', '?')} for "
            f"POP3 retrieval, {plan.get('starts', '?')} for cold starts{imap}), min–max in brackets; "
            f"ratios are of medians.\n\n{client_text(results)}{machine_text(results)}\n\n{end}")


def update_readme(path: Path, table: str, results: dict | None = None) -> None:
    if results is None:
        results = json.loads(results_path(DEFAULT_RELEASE).read_text())
    begin, end = markers(release_of(results))
    text = path.read_text()
    if begin not in text:
        # A release's first results: a block of its own after the first release's.
        after = text.index(END) + len(END)
        text = text[:after] + f"\n\n{begin}\n{end}" + text[after:]
    start, stop = text.index(begin), text.index(end) + len(end)
    path.write_text(text[:start] + section(results, table) + text[stop:])


def main() -> int:
    if sys.argv[1:]:
        # One results file (e.g. a smoke run's, /var/tmp/baremail-bench.last.json): printed only.
        results = json.loads(Path(sys.argv[1]).read_text())
        print(release_line(results))
        print(render(results))
        return 0
    for release in RELEASE_NAMES:
        path = results_path(release)
        if not path.exists():
            continue
        results = json.loads(path.read_text())
        table = render(results)
        update_readme(HERE / "README.md", table, results)
        print(release_line(results))
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
