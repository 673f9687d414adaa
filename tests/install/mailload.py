"""Mail traffic for the restart, kill and upgrade tests, run INSIDE the
container (python3 mailload.py ...; it prints one JSON object at the end).

Senders go on until the file given as --stop exists, or --seconds pass, or
--attempts attempts were made (whichever comes first): every loop is bounded.

  smtp      one message per connection, as cron, scripts and most daemons
            send: connect, EHLO, MAIL, RCPT, DATA, QUIT
  sendmail  one /usr/sbin/sendmail -i (baremail-mta) per message
  pop3      connect, USER/PASS, STAT, QUIT (nothing deleted)
  probe     connect and close at once, to each port, every 50 ms: a
            refused connection shows the port was closed at that moment

Every message carries "X-Attempt: <id>" and ends in "END <id>", so the
Maildir can be audited afterwards (tests/install/test_restarts_and_watchdog.py).
Outcomes: ack (250 / exit 0), temp (4xx, exit 75), perm (5xx, other exit),
refused (connection refused), dropped (connection broken), timeout.
"""

import argparse
import json
import os
import poplib
import smtplib
import socket
import subprocess
import threading
import time


def body(ident: str) -> bytes:
    payload = ("x" * 60 + "\r\n") * 30
    return (f"Subject: {ident}\r\nX-Attempt: {ident}\r\n\r\n{payload}END {ident}\r\n").encode()


class Load:
    def __init__(self, args):
        self.args = args
        self.deadline = time.monotonic() + args.seconds
        self.lock = threading.Lock()
        self.count = 0
        self.rows = []
        self.probes = {}

    def running(self) -> bool:
        return time.monotonic() < self.deadline and not os.path.exists(self.args.stop)

    def next_id(self, kind: str, client: int):
        with self.lock:
            if self.count >= self.args.attempts or not self.running():
                return None
            self.count += 1
            return f"{self.args.run}-{kind}-{client}-{self.count}"

    def record(self, ident: str, kind: str, outcome: str, detail="", seconds=0.0):
        with self.lock:
            self.rows.append({"id": ident, "kind": kind, "outcome": outcome,
                              "detail": str(detail)[:200], "seconds": round(seconds, 3)})

    def smtp(self, client: int):
        while (ident := self.next_id("smtp", client)) is not None:
            started = time.monotonic()
            step = "connect"   # where a failure happened: says which stage of the server lost it
            try:
                with smtplib.SMTP("127.0.0.1", self.args.smtp_port, timeout=60) as session:
                    step = "ehlo"
                    session.ehlo()
                    step = "transaction"
                    session.sendmail("load@test", ["root@localhost"], body(ident))
                outcome, detail = "ack", ""
            except ConnectionRefusedError as exc:
                outcome, detail = "refused", exc
            except smtplib.SMTPResponseException as exc:
                outcome = "temp" if 400 <= exc.smtp_code < 500 else "perm"
                detail = f"{exc.smtp_code} {exc.smtp_error!r}"
            except socket.timeout as exc:
                outcome, detail = "timeout", repr(exc)
            except (smtplib.SMTPException, OSError) as exc:
                outcome, detail = "dropped", repr(exc)
            if outcome != "ack":
                detail = f"at {step}, {time.time():.3f}: {detail}"
            self.record(ident, "smtp", outcome, detail, time.monotonic() - started)

    def sendmail(self, client: int):
        while (ident := self.next_id("sendmail", client)) is not None:
            started = time.monotonic()
            try:
                run = subprocess.run(["/usr/sbin/sendmail", "-i", "root"], input=body(ident),
                                     capture_output=True, timeout=120)
                code = run.returncode
                outcome = {0: "ack", 75: "temp"}.get(code, "perm")
                detail = run.stderr.decode(errors="replace").strip()
            except subprocess.TimeoutExpired as exc:
                outcome, detail = "timeout", repr(exc)
            self.record(ident, "sendmail", outcome, detail, time.monotonic() - started)

    def pop3(self, client: int):
        while (ident := self.next_id("pop3", client)) is not None:
            started = time.monotonic()
            try:
                session = poplib.POP3("127.0.0.1", 110, timeout=60)
                session.user("any")
                session.pass_("thing")
                session.stat()
                session.quit()
                outcome, detail = "ack", ""
            except ConnectionRefusedError as exc:
                outcome, detail = "refused", exc
            except poplib.error_proto as exc:
                outcome, detail = "temp", exc
            except socket.timeout as exc:
                outcome, detail = "timeout", repr(exc)
            except OSError as exc:
                outcome, detail = "dropped", repr(exc)
            self.record(ident, "pop3", outcome, detail, time.monotonic() - started)
            time.sleep(0.05)

    def probe(self, port: int):
        tally = self.probes.setdefault(str(port), {"ok": 0, "refused": 0, "other": 0})
        while self.running():
            try:
                socket.create_connection(("127.0.0.1", port), timeout=10).close()
                tally["ok"] += 1
            except ConnectionRefusedError:
                tally["refused"] += 1
            except OSError:
                tally["other"] += 1
            time.sleep(0.05)

    def run(self):
        threads = [threading.Thread(target=self.smtp, args=(n,)) for n in range(self.args.smtp)]
        threads += [threading.Thread(target=self.sendmail, args=(n,)) for n in range(self.args.sendmail)]
        threads += [threading.Thread(target=self.pop3, args=(n,)) for n in range(self.args.pop3)]
        threads += [threading.Thread(target=self.probe, args=(port,)) for port in self.args.probe]
        for thread in threads:
            thread.start()
        with open(self.args.started, "w"):
            pass
        for thread in threads:
            thread.join()
        return {"rows": self.rows, "probes": self.probes}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--smtp", type=int, default=0)
    parser.add_argument("--sendmail", type=int, default=0)
    parser.add_argument("--pop3", type=int, default=0)
    parser.add_argument("--probe", type=int, action="append", default=[])
    parser.add_argument("--smtp-port", type=int, default=25)
    parser.add_argument("--run", default="load", help="a name for this run, first in every id")
    parser.add_argument("--attempts", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--stop", default="/root/mailload.stop")
    parser.add_argument("--started", default="/root/mailload.started")
    print(json.dumps(Load(parser.parse_args()).run()))


if __name__ == "__main__":
    main()
