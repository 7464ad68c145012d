"""A loopback MJPEG-over-HTTP server for live-source tests (bounded: stops after max_frames)."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import cv2
import numpy as np


class MJPEGServer:
    def __init__(self, fps: float = 50.0, max_frames: int = 400, size: int = 96, connections: int = 1000) -> None:
        self.fps, self.max_frames, self.size = fps, max_frames, size
        self.sent = 0
        self.connections = connections  # connections served; later ones are refused
        self.stop_event = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if outer.connections <= 0:
                    self.send_error(503)
                    return
                outer.connections -= 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for i in range(outer.max_frames):
                        if outer.stop_event.is_set():
                            break
                        img = np.full((outer.size, outer.size, 3), (i * 7) % 255, np.uint8)
                        cv2.putText(img, str(i), (5, 50), cv2.FONT_HERSHEY_SIMPLEX, 1, (255, 255, 255), 2)
                        ok, jpg = cv2.imencode(".jpg", img)
                        data = jpg.tobytes()
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: "
                                         + str(len(data)).encode() + b"\r\n\r\n" + data + b"\r\n")
                        self.wfile.flush()
                        outer.sent += 1
                        time.sleep(1.0 / outer.fps)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/stream.mjpg"

    def __enter__(self) -> MJPEGServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def __exit__(self, *exc) -> None:
        self.stop()
