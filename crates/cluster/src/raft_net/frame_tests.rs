//! Frames on a controller's connection: whole, one exchange at a time, each answer to its own request.

use super::*;

fn snapshot_request(len: u32) -> Request {
    Request::Snapshot(InstallSnapshotRequest::<crate::raft::TypeConfig> {
        vote: openraft::Vote::new(1, 1),
        meta: Default::default(),
        offset: 0,
        data: (0..len)
            .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect(),
        done: true,
    })
}

#[tokio::test]
async fn a_snapshot_chunk_of_megabytes_round_trips_through_a_frame() {
    let (a, b) = tokio::io::duplex(1 << 16);
    let mut a: BoxStream = Box::new(a);
    let mut b: BoxStream = Box::new(b);
    let sent = snapshot_request(3 << 20);
    let want = serde_json::to_vec(&sent).expect("json");
    let writer = tokio::spawn(async move { write_frame(&mut a, &sent).await });
    let got: Request = read_frame(&mut b).await.expect("a whole frame");
    writer.await.expect("join").expect("written");
    assert_eq!(serde_json::to_vec(&got).expect("json"), want);
}

/// A peer over in-memory pipes: every connection is served in turn, each request (an
/// install-snapshot chunk of `n` bytes) answered with `n`, after `answer_after(n)`;
/// the first connection is read only after `first_read_after`. A frame that does not
/// parse ends its connection and is counted.
#[derive(Debug)]
struct Peer {
    first_read_after: Duration,
    answer_after: fn(usize) -> Duration,
    connections: std::sync::atomic::AtomicUsize,
    bad_frames: std::sync::atomic::AtomicUsize,
    /// The sizes of the requests read, in order.
    received: std::sync::Mutex<Vec<usize>>,
}

impl Peer {
    fn new(first_read_after: Duration, answer_after: fn(usize) -> Duration) -> Arc<Peer> {
        Arc::new(Peer {
            first_read_after,
            answer_after,
            connections: Default::default(),
            bad_frames: Default::default(),
            received: Default::default(),
        })
    }

    async fn serve(self: Arc<Self>, mut theirs: BoxStream, first: bool) {
        if first {
            tokio::time::sleep(self.first_read_after).await;
        }
        loop {
            let request = match read_frame::<Request>(&mut theirs).await {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return,
                Err(_) => {
                    self.bad_frames
                        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
            };
            let Request::Snapshot(r) = request else {
                return;
            };
            self.received.lock().expect("received").push(r.data.len());
            tokio::time::sleep((self.answer_after)(r.data.len())).await;
            let answer = Response::Control(Ok(r.data.len() as u64));
            if write_frame(&mut theirs, &answer).await.is_err() {
                return;
            }
        }
    }
}

/// Connects to the [`Peer`].
#[derive(Debug)]
struct ToPeer(Arc<Peer>);

impl Transport for ToPeer {
    fn connect<'a>(&'a self, _addr: &'a str, _timeout: Duration) -> IoFuture<'a> {
        Box::pin(async move {
            // Small enough that a large frame cannot be written without a reader.
            let (ours, theirs) = tokio::io::duplex(4096);
            let n = self
                .0
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(self.0.clone().serve(Box::new(theirs), n == 0));
            Ok(Box::new(ours) as BoxStream)
        })
    }
    fn accept(&self, _tcp: TcpStream) -> IoFuture<'static> {
        Box::pin(async { Err(std::io::ErrorKind::Unsupported.into()) })
    }
}

fn conn_to(peer: &Arc<Peer>) -> TcpConn {
    TcpConn {
        target: 2,
        address: "peer".into(),
        link: Default::default(),
        transport: Arc::new(ToPeer(peer.clone())),
    }
}

/// What a call got: the size the peer says it received, or the error's kind.
async fn answer(conn: &mut TcpConn, len: u32, wait: Duration) -> Result<u64, String> {
    let request = snapshot_request(len);
    match tokio::time::timeout(wait, conn.call(&request, Duration::from_secs(60))).await {
        Ok(Ok(Response::Control(Ok(n)))) => Ok(n),
        Ok(Ok(_)) => Err("another answer".into()),
        Ok(Err(e)) => Err(format!("{e:?}")),
        Err(_) => Err("no answer in time".into()),
    }
}

#[tokio::test]
async fn a_call_dropped_mid_frame_never_sends_the_next_request_glued_to_it() {
    // The peer reads nothing for 200 ms: a 1 MB request cannot be written whole before
    // openraft's own timeout drops the call.
    let peer = Peer::new(Duration::from_millis(200), |_| Duration::ZERO);
    let mut conn = conn_to(&peer);
    assert_eq!(
        answer(&mut conn, 1 << 20, Duration::from_millis(50)).await,
        Err("no answer in time".into())
    );
    // The next call gets its own answer, from frames the peer could read.
    assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
    assert_eq!(
        peer.bad_frames.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the peer read a frame that does not parse"
    );
}

#[tokio::test]
async fn a_call_dropped_while_waiting_for_its_answer_never_hands_that_answer_to_the_next() {
    // The first request's answer comes after 300 ms, long after its caller left.
    let peer = Peer::new(Duration::ZERO, |n| {
        Duration::from_millis(if n == 16 { 300 } else { 0 })
    });
    let mut conn = conn_to(&peer);
    assert_eq!(
        answer(&mut conn, 16, Duration::from_millis(50)).await,
        Err("no answer in time".into())
    );
    assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
    // One connection did for both: the first exchange was let finish.
    assert_eq!(
        peer.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn a_peer_slower_than_every_call_still_gets_a_request_through_once() {
    // Every answer takes 300 ms; openraft gives each call 100 ms and sends the same
    // append again when it runs out.
    let peer = Peer::new(Duration::ZERO, |_| Duration::from_millis(300));
    let mut conn = conn_to(&peer);
    let mut answers = Vec::new();
    for _ in 0..8 {
        answers.push(answer(&mut conn, 16, Duration::from_millis(100)).await);
        if answers.last() == Some(&Ok(16)) {
            break;
        }
    }
    assert_eq!(answers.last(), Some(&Ok(16)), "{answers:?}");
    assert_eq!(*peer.received.lock().expect("received"), vec![16]);
}

#[tokio::test]
async fn a_call_whose_caller_left_before_its_turn_sends_nothing() {
    let peer = Peer::new(Duration::ZERO, |n| {
        Duration::from_millis(if n == 16 { 300 } else { 0 })
    });
    let mut conn = conn_to(&peer);
    // The first exchange holds the connection for 300 ms; the second caller leaves
    // while it waits its turn, so its request is never sent.
    for len in [16, 24] {
        assert_eq!(
            answer(&mut conn, len, Duration::from_millis(50)).await,
            Err("no answer in time".into())
        );
    }
    assert_eq!(answer(&mut conn, 8, Duration::from_secs(5)).await, Ok(8));
    assert_eq!(*peer.received.lock().expect("received"), vec![16, 8]);
}
