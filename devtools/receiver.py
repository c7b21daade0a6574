"""`python -m devtools.receiver`: a host application's endpoint for the
notifications codat-authflow sends, for the quick start
(docs/host-quickstart.md).

It verifies every request with the subscription's secret, as your service
must (the `standardwebhooks` library here; any Standard Webhooks or Svix
library does the same), prints one line per notification and answers 204.
A request that fails verification gets 401. With --fail it answers 500 to
everything, so that you can watch retries end in a dead letter.

    python -m devtools.receiver --secret whsec_...            # port 9000
    python -m devtools.receiver --secret whsec_... --fail
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def say(line: str) -> None:
    """One whole line: print() from several request threads at once writes the
    text and its newline separately, so two lines could run together."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def handler(webhook: Webhook, fail: bool) -> type[BaseHTTPRequestHandler]:
    class Receiver(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # one line per notification is enough
            pass

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if fail:
                say(f"500 (--fail) {self.headers.get('webhook-id')}")
                return self._answer(500)
            try:
                # Checks the signature and that webhook-timestamp is within 5 minutes.
                event = webhook.verify(body, {k.lower(): v for k, v in self.headers.items()})
            except WebhookVerificationError as exc:
                say(f"401 rejected: {exc}")
                return self._answer(401)
            data = event.get("data", {})
            # Deduplicate on event["id"] in a real service: a retry or a replay
            # carries the same id.
            say(
                f"204 {event['type']:<22} id={event['id']} company={data.get('companyId')} "
                + json.dumps({k: data[k] for k in ("from", "to") if k in data})
            )
            return self._answer(204)

    return Receiver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.receiver",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--port", type=int, default=9000, help="default: %(default)s")
    parser.add_argument(
        "--secret",
        default=os.environ.get("SUBSCRIPTION_SECRET"),
        help="the subscription's secret (whsec_..., returned once by POST /api/subscriptions); "
        "default: $SUBSCRIPTION_SECRET",
    )
    parser.add_argument("--fail", action="store_true", help="answer 500 to everything")
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error("--secret (or SUBSCRIPTION_SECRET) is required")
    try:
        webhook = Webhook(args.secret)
    except Exception as exc:  # the library's errors for a malformed secret vary
        parser.error(f"--secret is not a whsec_<base64> secret ({type(exc).__name__})")
    try:
        server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(webhook, args.fail))
    except OSError as exc:
        parser.error(f"cannot listen on 127.0.0.1:{args.port}: {exc.strerror}")
    mode = "answering 500 to everything" if args.fail else "verifying"
    print(f"receiver: http://127.0.0.1:{args.port}/ {mode}; Ctrl-C stops", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
