use super::*;

#[test]
fn destination_urls_are_validated_and_masked() {
    let u = PushUrl::parse("rtmp://a.rtmp.youtube.com/live2").unwrap();
    assert_eq!((u.protocol, u.port, u.app.as_str()), (PushProtocol::Rtmp, 1935, "live2"));
    assert_eq!(u.masked(), "rtmp://a.rtmp.youtube.com:1935/live2");
    let u = PushUrl::parse("rtmps://live.twitch.tv:443/app/").unwrap();
    assert_eq!((u.protocol, u.app.as_str()), (PushProtocol::Rtmps, "app"));
    let u = PushUrl::parse("srt://[::1]:9000").unwrap();
    assert_eq!(u.masked(), "srt://[::1]:9000");
    for bad in [
        "http://x/live",
        "rtmp://x",
        "srt://x",
        "rtmp://:1935/live",
        "rtmp://x:0/live",
        "rtmp://x:99999/live",
        "rtmp://user:pw@x/live",
        "rtmp://x/live?key=secret",
        "x/live",
    ] {
        assert!(PushUrl::parse(bad).is_err(), "{bad} accepted");
    }
    // Errors never echo the URL (it may hold a key someone pasted into it).
    let e = PushUrl::parse("rtmp://x/live?key=secret").unwrap_err();
    assert!(!e.contains("secret"), "{e}");
}

#[test]
fn srt_stream_ids_follow_the_access_control_convention() {
    let mut d = Destination {
        id: 1,
        url: PushUrl::parse("srt://127.0.0.1:8890").unwrap(),
        stream_key: "live_abc".into(),
        enabled: true,
    };
    assert_eq!(srt::stream_id(&d), "#!::r=live/live_abc,m=publish");
    d.stream_key = "#!::r=x/y,m=publish".into();
    assert_eq!(srt::stream_id(&d), "#!::r=x/y,m=publish");
}

#[test]
fn a_deleted_destination_leaves_no_status_behind() {
    let r = Restream::default();
    let d = Destination {
        id: 7,
        url: PushUrl::parse("rtmp://example.com/app").unwrap(),
        stream_key: "k".into(),
        enabled: true,
    };
    r.set_destinations("c", vec![d.clone()]);
    r.cell(&d).failed("refused".into());
    assert_eq!((r.status(7).retries, r.status(7).last_error.as_deref()), (1, Some("refused")));
    // Still listed: kept. Deleted: gone, so a later destination with a reused id starts clean.
    r.set_destinations("c", vec![d]);
    assert_eq!(r.status(7).retries, 1);
    r.set_destinations("c", vec![]);
    assert_eq!((r.status(7).retries, r.status(7).last_error), (0, None));
}
