#!/usr/bin/python3
"""Fake IP camera for tidecast's RTSP-pull tests (GStreamer RTSP server).

Serves live test video (H.264 or H.265) plus optional audio (AAC as
mpeg4-generic, or Opus) at rtsp://127.0.0.1:<port><path>, optionally behind
Digest auth. Prints exactly one line "READY <port>" on stdout once listening;
all logging goes to stderr. Exits cleanly on SIGTERM/SIGINT.

Needs the system interpreter (Debian's python3-gi), not a pyenv one:

    /usr/bin/python3 tests/rtsp/camera.py --port 0 --user u --password p \
        --video h264 --audio aac --protocols tcp,udp
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

ROLE = "viewer"


def log(*args):
    print("camera:", *args, file=sys.stderr, flush=True)


def have(element):
    return Gst.ElementFactory.find(element) is not None


def launch_line(a):
    w, h = a.size.lower().split("x")
    video = (
        f"videotestsrc is-live=true pattern=ball ! "
        f"video/x-raw,width={w},height={h},framerate={a.fps}/1 ! "
    )
    if have("timeoverlay"):  # optional: lives in gstreamer1.0-x
        video += "timeoverlay ! "
    # 8-bit 4:2:0, what cameras send (x265enc would otherwise pick 4:4:4 12-bit, Rext).
    video += "videoconvert ! video/x-raw,format=I420 ! "
    if a.video == "h264":
        video += (
            # sliced-threads=false: one slice per frame. With zerolatency's
            # sliced threads, config-interval=-1 puts SPS/PPS before *every*
            # IDR slice, splitting the access unit (ffmpeg: "corrupt frame").
            f"x264enc tune=zerolatency speed-preset=ultrafast bframes=0 "
            f"sliced-threads=false key-int-max={a.gop} ! video/x-h264,profile=baseline ! "
            f"rtph264pay name=pay0 pt=96 config-interval=-1"
        )
    else:
        video += (
            f"x265enc tune=zerolatency speed-preset=ultrafast "
            f"key-int-max={a.gop} ! rtph265pay name=pay0 pt=96 config-interval=-1"
        )

    audio = ""
    if a.audio != "none":
        audio = (
            "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! "
            "audio/x-raw,rate=48000,channels=1 ! "
        )
        if a.audio == "aac":
            enc = next((e for e in ("fdkaacenc", "avenc_aac", "voaacenc") if have(e)), None)
            if enc is None:
                sys.exit("camera: no AAC encoder (fdkaacenc/avenc_aac/voaacenc)")
            # mpeg4-generic (RFC 3640), which retina depacketizes; not LATM.
            audio += f"{enc} ! rtpmp4gpay name=pay1 pt=97"
        else:
            audio += "opusenc ! rtpopuspay name=pay1 pt=97"
    return f"( {video} {audio} )"


def not_seekable(_pad, info):
    # Clients (retina, ffmpeg) PLAY with "Range: npt=0.000-". GStreamer turns
    # that into a flushing seek of the shared live pipeline, rewinding the RTP
    # timestamps of every client already playing. Real cameras ignore the
    # range, so report "not seekable": a fresh SEEKING query already says so,
    # and answering it unchanged (HANDLED) keeps it that way.
    if info.get_query().type == Gst.QueryType.SEEKING:
        return Gst.PadProbeReturn.HANDLED
    return Gst.PadProbeReturn.OK


def on_media(_factory, media):
    for name in ("pay0", "pay1"):
        pay = media.get_element().get_by_name(name)
        if pay is not None:
            pay.get_static_pad("src").add_probe(Gst.PadProbeType.QUERY_UPSTREAM, not_seekable)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    p.add_argument("--address", default="127.0.0.1")
    p.add_argument("--path", default="/cam")
    p.add_argument("--user")
    p.add_argument("--password")
    p.add_argument("--video", choices=["h264", "h265"], default="h264")
    p.add_argument("--audio", choices=["aac", "opus", "none"], default="aac")
    p.add_argument("--protocols", choices=["tcp", "udp", "tcp,udp", "udp,tcp"], default="tcp,udp")
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--size", default="640x360", help="WxH")
    p.add_argument("--gop", type=int, default=25, help="keyframe interval in frames")
    a = p.parse_args()
    if (a.user is None) != (a.password is None):
        p.error("--user and --password go together")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.address)
    server.set_service(str(a.port))  # "0" lets the OS choose; read it back below

    factory = GstRtspServer.RTSPMediaFactory()
    launch = launch_line(a)
    log("launch:", launch)
    factory.set_launch(launch)
    factory.set_shared(True)  # one pipeline, many clients
    factory.connect("media-configure", on_media)
    protos = GstRtsp.RTSPLowerTrans(0)
    for name in a.protocols.split(","):
        protos |= GstRtsp.RTSPLowerTrans.TCP if name == "tcp" else GstRtsp.RTSPLowerTrans.UDP
    factory.set_protocols(protos)

    if a.user is not None:
        auth = GstRtspServer.RTSPAuth()
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
        auth.add_digest(a.user, a.password, token)
        server.set_auth(auth)
        factory.add_role_from_structure(Gst.Structure.new_from_string(
            f"{ROLE}, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"))
        log(f"digest auth on, realm {auth.get_realm()!r}")

    server.get_mount_points().add_factory(a.path, factory)
    server.connect("client-connected", lambda _s, _c: log("client connected"))

    if server.attach(None) == 0:
        sys.exit(f"camera: cannot listen on {a.address}:{a.port}")
    port = server.get_bound_port()
    log(f"serving rtsp://{a.address}:{port}{a.path}")
    print(f"READY {port}", flush=True)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    loop.run()
    log("shutting down")


if __name__ == "__main__":
    main()
