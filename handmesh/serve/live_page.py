"""The Live tab: the page's webcam frames posted as JPEG bytes to FRAME_ROUTE, the overlays answered as JPEG bytes.

Why not Gradio's streaming image input: its client's per-frame machinery costs the browser many times the frame's own
encoding, which halves the rate where the browser shares the cores with the model (docs/results.md, "Browser demo").
This tab is plain HTML: a loop in the page draws the camera's newest frame to a canvas, posts it as JPEG, shows
the answer and posts the next frame, one request per frame, bytes both ways. The server side is `LiveSessions`.

    POST FRAME_ROUTE?session=ID&detector=D&smoothing=0|1&view=V&max_hands=N   body: the frame, image/jpeg
      200 image/jpeg: the previous frame's overlay; 204: starting (no overlay yet); STATUS_HEADER: the status line
      400 / 413 / 503 text/plain: the message for the page (bad frame or controls, too large, every slot busy)
    POST STOP_ROUTE?session=ID: the page stopped streaming (also sent when the page goes away)
"""

from __future__ import annotations

import html
import json
import re
from urllib.parse import quote

import cv2
import numpy as np

from handmesh.demo.detect import DETECTORS
from handmesh.errors import HandmeshError
from handmesh.serve.frames import VIEWS, Controls, log
from handmesh.serve.live import LiveBusy, LiveSessions

FRAME_ROUTE = "/handmesh/live/frame"
STOP_ROUTE = "/handmesh/live/stop"
STATUS_HEADER = "X-Handmesh-Status"  # percent-encoded UTF-8
JPEG_QUALITY = 85  # overlays sent back; the page sends its frames at the same quality
SESSION = re.compile(r"[A-Za-z0-9-]{8,64}")
MAX_HANDS = 4


def live_html(detector: str) -> str:
    """The tab's markup: camera preview, overlay, Start/Stop, the controls, the status line."""
    options = "".join(f'<option value="{name}"{" selected" if name == detector else ""}>{name}</option>'
                      for name in DETECTORS)
    views = "".join(f'<label><input type="radio" name="live-view" value="{html.escape(name)}"'
                    f'{" checked" if name == "mesh" else ""}> {html.escape(name)}</label> ' for name in VIEWS)
    return f"""
<div id="live">
  <div style="display:flex;gap:12px;flex-wrap:wrap;align-items:flex-start">
    <img id="live-output" alt="overlay" style="max-width:100%;width:640px;background:#222;min-height:120px">
    <video id="live-camera" muted playsinline style="width:160px;background:#222" title="camera"></video>
  </div>
  <p style="display:flex;gap:16px;flex-wrap:wrap;align-items:center;margin-top:8px">
    <button id="live-start" class="lg primary" style="padding:6px 18px">Start</button>
    <button id="live-stop" class="lg secondary" style="padding:6px 18px" disabled>Stop</button>
    <label>detector <select id="live-detector">{options}</select></label>
    <label><input id="live-smoothing" type="checkbox" checked> smoothing (One Euro)</label>
    <span>draw: {views}</span>
    <label>max hands <input id="live-max-hands" type="number" min="1" max="{MAX_HANDS}" value="2"
      style="width:3.5em"></label>
  </p>
  <pre id="live-status" style="white-space:pre-wrap">press Start to stream this browser's webcam</pre>
</div>"""


# Run by the page when it loads (gr.Blocks(js=...)): the tab's client. Listeners are delegated to the document, so
# they work whenever Gradio mounts the tab's HTML.
LIVE_JS = """() => {
  const FRAME = %(frame)s, STOP = %(stop)s, HEADER = %(header)s, QUALITY = %(quality)s;
  const $ = (id) => document.getElementById(id);
  const say = (text) => { const status = $("live-status"); if (status) status.textContent = text; };
  const url = (path, params) => {
    const target = new URL(path.slice(1), window.location.href.replace(/[?#].*$/, "").replace(/[^/]*$/, ""));
    for (const [key, value] of Object.entries(params)) target.searchParams.set(key, value);
    return target;
  };
  let session = null, camera = null, shown = null;
  const buttons = (live) => { $("live-start").disabled = live; $("live-stop").disabled = !live; };
  const controls = () => ({
    detector: $("live-detector").value, smoothing: $("live-smoothing").checked ? "1" : "0",
    view: (document.querySelector("input[name='live-view']:checked") || {value: "mesh"}).value,
    max_hands: $("live-max-hands").value || "2"});
  function stop() {
    if (session) navigator.sendBeacon(url(STOP, {session}));
    if (camera) camera.getTracks().forEach((track) => track.stop());
    session = camera = null;
    if ($("live-start")) buttons(false);
  }
  async function start() {
    if (session) return;
    if (!window.isSecureContext || !navigator.mediaDevices) {
      say("this page is not a secure context (https, localhost or 127.0.0.1), so the browser gives it no camera: "
        + "reach a remote server through an SSH tunnel (ssh -L 7860:localhost:7860 server) and open localhost");
      return;
    }
    try {
      camera = await navigator.mediaDevices.getUserMedia({video: true});
    } catch (error) {
      say("no camera (" + error.name + "): allow camera access for this page in the browser's site settings, check "
        + "that no other program holds the camera, then press Start again");
      return;
    }
    const video = $("live-camera");
    video.srcObject = camera;
    await video.play();
    session = (crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2) + String(Date.now()));
    buttons(true);
    say("starting");
    run(video, session);
  }
  async function run(video, id) {
    const canvas = document.createElement("canvas");
    let presented = 0, sent = -1, wake = null;
    const watch = () => { presented++; if (wake) wake(); if (session === id) video.requestVideoFrameCallback(watch); };
    if (video.requestVideoFrameCallback) video.requestVideoFrameCallback(watch); else presented = NaN;
    while (session === id) {
      if (presented === sent) {  // this camera frame went already: wait for the next (at most 50 ms)
        await Promise.race([new Promise((resolve) => { wake = resolve; }),
                            new Promise((resolve) => setTimeout(resolve, 50))]);
        wake = null;
        continue;
      }
      sent = presented;
      canvas.width = video.videoWidth;
      canvas.height = video.videoHeight;
      canvas.getContext("2d").drawImage(video, 0, 0);
      const frame = await new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", QUALITY / 100));
      let answer;
      try {
        answer = await fetch(url(FRAME, {session: id, ...controls()}),
                             {method: "POST", body: frame, headers: {"Content-Type": "image/jpeg"}});
      } catch (error) {
        if (session !== id) return;
        say("the server did not answer (" + error.message + "): is handmesh serve still running?");
        stop();
        return;
      }
      if (session !== id) return;
      const status = decodeURIComponent(answer.headers.get(HEADER) || "");
      if (answer.status === 200) {
        const image = await answer.blob();
        const previous = shown;
        shown = URL.createObjectURL(image);
        $("live-output").src = shown;
        if (previous) URL.revokeObjectURL(previous);
        say(status);
      } else if (answer.status === 204) {
        say(status || "starting");
      } else {
        say(await answer.text());
        stop();
        return;
      }
    }
  }
  document.addEventListener("click", (event) => {
    const button = event.target.closest && event.target.closest("#live-start, #live-stop");
    if (button) (button.id === "live-start" ? start : stop)();
  });
  window.addEventListener("pagehide", stop);
}"""


def live_js() -> str:
    return LIVE_JS % {"frame": json.dumps(FRAME_ROUTE), "stop": json.dumps(STOP_ROUTE),
                      "header": json.dumps(STATUS_HEADER), "quality": JPEG_QUALITY}


def parse_controls(query) -> Controls:
    """The frame request's query (a mapping) -> Controls; HandmeshError for values the page would never send."""
    detector, view = query.get("detector", "auto"), query.get("view", "mesh")
    if detector not in DETECTORS or view not in VIEWS:
        raise HandmeshError(f"expected detector in {list(DETECTORS)} and view in {list(VIEWS)}, found {detector!r} "
                            f"and {view!r}; reload the page")
    try:
        max_hands = int(query.get("max_hands", "2"))
    except ValueError:
        max_hands = 0
    if not 1 <= max_hands <= MAX_HANDS:
        raise HandmeshError(f"max hands: expected 1 to {MAX_HANDS}, found {query.get('max_hands')!r}")
    return Controls(detector=detector, smoothing=query.get("smoothing", "1") == "1", view=view, max_hands=max_hands)


def encode_jpeg(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 RGB -> JPEG bytes."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise HandmeshError("the overlay could not be encoded as JPEG")
    return data.tobytes()


def live_routes(sessions: LiveSessions, max_upload_bytes: int) -> list:
    """Starlette routes for FRAME_ROUTE and STOP_ROUTE (for Gradio's app: launch(app_kwargs={"routes": ...}))."""
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    def text(status: int, message: str) -> Response:
        return Response(message, status_code=status, media_type="text/plain; charset=utf-8")

    async def frame(request) -> Response:
        session = request.query_params.get("session", "")
        if not SESSION.fullmatch(session):
            return text(400, f"expected a session id of 8-64 letters, digits or dashes, found {session[:70]!r}; "
                             "reload the page")
        size = int(request.headers.get("content-length") or 0)
        if size > max_upload_bytes:
            return text(413, f"expected a frame of at most {max_upload_bytes / 2**20:g} MiB (--max-upload-mb), found "
                             f"{size:,} bytes; use a smaller camera resolution or a larger --max-upload-mb")
        data = await request.body()
        try:
            controls = parse_controls(request.query_params)
            answer = await run_in_threadpool(sessions.frame, session, data, controls)
            headers = {STATUS_HEADER: quote(answer.status), "Cache-Control": "no-store"}
            if answer.overlay is None:
                return Response(status_code=204, headers=headers)
            jpeg = await run_in_threadpool(encode_jpeg, answer.overlay)
            return Response(jpeg, media_type="image/jpeg", headers=headers)
        except LiveBusy as error:
            return text(503, str(error))
        except HandmeshError as error:
            log(f"live frame refused: {error}")
            return text(400, str(error))

    async def stop(request) -> Response:
        sessions.stop(request.query_params.get("session", ""))
        return Response(status_code=204)

    return [Route(FRAME_ROUTE, frame, methods=["POST"]), Route(STOP_ROUTE, stop, methods=["POST"])]
