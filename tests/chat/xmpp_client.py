#!/usr/bin/python3
"""A real XMPP client (slixmpp) driven line by line, for tests/chat_xmpp.rs.

Usage: xmpp_client.py JID PASSWORD HOST PORT

Prints one JSON object per line for what it receives:
  {"ready": true}
  {"message": BODY, "from": BARE_JID}
  {"subscribe": BARE_JID} / {"subscribed": BARE_JID}
Reads one JSON command per line on stdin:
  {"send": BODY, "to": JID[, "type": "chat"|"normal"|"headline"|"groupchat"|"error"]}
  {"subscribe": JID}   {"approve": JID}
  {"flood": N, "to": JID, "body": BODY}   {"quit": true}
"""

import asyncio
import json
import os
import sys

import slixmpp


def out(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.auto_authorize = None  # we decide, on command
        self.auto_subscribe = False
        self.add_event_handler("session_start", self.start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_subscribe", self.on_subscribe)
        self.add_event_handler("presence_subscribed", self.on_subscribed)
        self.add_event_handler("disconnected", lambda _: out({"disconnected": True}))
        self.pending = b""

    async def start(self, _event):
        self.send_presence()
        await self.get_roster()
        out({"ready": True})
        asyncio.get_event_loop().add_reader(sys.stdin, self.on_command)

    def on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            out({"message": msg["body"], "from": msg["from"].bare})

    def on_subscribe(self, pres):
        out({"subscribe": pres["from"].bare})

    def on_subscribed(self, pres):
        out({"subscribed": pres["from"].bare})

    def on_command(self):
        # Read what is there with os.read: sys.stdin's own buffer would keep
        # lines the event loop is never told about.
        data = os.read(sys.stdin.fileno(), 65536)
        if not data:
            asyncio.get_event_loop().remove_reader(sys.stdin)
            self.disconnect()
            return
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            if line.strip():
                self.run(json.loads(line))

    def run(self, cmd):
        if "send" in cmd:
            self.send_message(mto=cmd["to"], mbody=cmd["send"], mtype=cmd.get("type", "chat"))
        elif "flood" in cmd:
            for _ in range(cmd["flood"]):
                self.send_message(mto=cmd["to"], mbody=cmd["body"], mtype="chat")
        elif "subscribe" in cmd:
            self.send_presence(pto=cmd["subscribe"], ptype="subscribe")
        elif "approve" in cmd:
            self.send_presence(pto=cmd["approve"], ptype="subscribed")
        elif "quit" in cmd:
            self.disconnect()


def main():
    jid, password, host, port = sys.argv[1:5]
    client = Client(jid, password)
    client["feature_mechanisms"].unencrypted_plain = True
    client.connect(address=(host, int(port)), use_ssl=False, force_starttls=False, disable_starttls=True)
    client.loop.run_until_complete(client.disconnected)


if __name__ == "__main__":
    main()
