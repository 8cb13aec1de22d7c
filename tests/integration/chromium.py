"""Headless Chromium (Debian's package) driven over the DevTools protocol.

``Chromium().run(url, expression)`` opens ``url`` in a fresh headless browser
and returns the value of ``expression`` (awaited when it is a promise). The
browser talks to nothing but loopback: the flags keep it from phoning home
(this machine has no route out, and every attempt would be refused)."""
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time

import aiohttp

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--remote-debugging-port=0"]


def binary():
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="tracker-chromium-")
        self.proc = subprocess.Popen([binary(), *FLAGS, f"--user-data-dir={self.profile}",
                                      "about:blank"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.port = self._devtools_port()

    def _devtools_port(self, timeout=30):
        path = os.path.join(self.profile, "DevToolsActivePort")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(path):
                with open(path) as fh:
                    lines = fh.read().split()
                if lines:
                    return int(lines[0])
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def run(self, url, expression, timeout=60):
        return asyncio.run(self._run(url, expression, timeout))

    async def _run(self, url, expression, timeout):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                session = _Session(ws)
                await session.call("Page.enable")
                await session.call("Page.navigate", {"url": url})
                await session.wait_event("Page.loadEventFired", timeout)
                result = await session.call("Runtime.evaluate", {
                    "expression": expression, "awaitPromise": True,
                    "returnByValue": True}, timeout)
        if "exceptionDetails" in result:
            raise AssertionError("page script failed: %s" % json.dumps(
                result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    def screenshot(self, url, path, width=1200, height=900, wait_expression=None, timeout=60):
        """A PNG of ``url`` (after ``wait_expression`` settles, if given)."""
        return asyncio.run(self._screenshot(url, path, width, height, wait_expression, timeout))

    async def _screenshot(self, url, path, width, height, wait_expression, timeout):
        import base64
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{self.port}/json") as r:
                page = next(t for t in await r.json() if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                session = _Session(ws)
                await session.call("Page.enable")
                await session.call("Emulation.setDeviceMetricsOverride", {
                    "width": width, "height": height, "deviceScaleFactor": 1,
                    "mobile": False})
                await session.call("Page.navigate", {"url": url})
                await session.wait_event("Page.loadEventFired", timeout)
                if wait_expression:
                    await session.call("Runtime.evaluate", {
                        "expression": wait_expression, "awaitPromise": True}, timeout)
                shot = await session.call("Page.captureScreenshot", {"format": "png"}, timeout)
        with open(path, "wb") as fh:
            fh.write(base64.b64decode(shot["data"]))

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


class _Session:
    """Numbered DevTools calls over one WebSocket; events kept until awaited."""

    def __init__(self, ws):
        self.ws = ws
        self.next_id = 0
        self.events = []

    async def call(self, method, params=None, timeout=30):
        self.next_id += 1
        mine = self.next_id
        await self.ws.send_str(json.dumps({"id": mine, "method": method,
                                           "params": params or {}}))
        while True:
            message = json.loads((await self.ws.receive(timeout=timeout)).data)
            if message.get("id") == mine:
                if "error" in message:
                    raise AssertionError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    async def wait_event(self, name, timeout=30):
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events:
                if event["method"] == name:
                    self.events.remove(event)
                    return event
            message = json.loads((await self.ws.receive(
                timeout=max(0.1, deadline - time.monotonic()))).data)
            if "method" in message:
                self.events.append(message)
