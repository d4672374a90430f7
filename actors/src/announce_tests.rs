//! The actors with a recording sink and a hand-driven clock: no sockets, no root.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use pnet_datalink::MacAddr;

use super::*;
use crate::lease::{Clock, Lease};
use crate::responder::{Answerer, FrameSink, Responder, SharedSink};
use crate::wire;

struct Recorder(Arc<Mutex<Vec<Vec<u8>>>>);

impl FrameSink for Recorder {
    fn send(&mut self, frame: &[u8]) -> std::io::Result<()> {
        self.0.lock().unwrap().push(frame.to_vec());
        Ok(())
    }
}

struct HandClock(AtomicU64);

impl Clock for HandClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

const MAC: MacAddr = MacAddr(2, 0, 0, 0, 0, 0x0b);

fn who_has(target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x64, 0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[2, 0, 0, 0, 0, 0x64, 10, 77, 0, 100]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

struct Rig {
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    clock: Arc<HandClock>,
    lease: Arc<Lease>,
    answerer: Arc<Answerer>,
    announcer: Addr<Announcer>,
}

/// The rig and eth0's handle; the announcer starts with eth0 unless `later`.
fn rig_with(repeats: Vec<Duration>, later: bool) -> (Rig, InterfaceHandle) {
    let sent = Arc::new(Mutex::new(Vec::new()));
    let clock = Arc::new(HandClock(AtomicU64::new(1_000)));
    let lease = Arc::new(Lease::new());
    lease.extend_to(1_000_000);
    let answerer = Arc::new(Answerer::new("eth0", MAC, lease.clone(), clock.clone()));
    let sink: SharedSink = Arc::new(Mutex::new(Box::new(Recorder(sent.clone()))));
    let handle = InterfaceHandle {
        answerer: answerer.clone(),
        arp: Responder::new(answerer.clone(), sink.clone()).start(),
        ndp: Some(Responder::new(answerer.clone(), sink).start()),
    };
    let interfaces = if later {
        BTreeMap::new()
    } else {
        BTreeMap::from([("eth0".to_string(), handle.clone())])
    };
    let announcer = Announcer::new(interfaces, repeats).start();
    let rig = Rig {
        sent,
        clock,
        lease,
        answerer,
        announcer,
    };
    (rig, handle)
}

fn rig(repeats: Vec<Duration>) -> Rig {
    rig_with(repeats, false).0
}

fn owned(ips: &[IpAddr]) -> Sync {
    Sync {
        owned: ips
            .iter()
            .map(|ip| (*ip, vec!["eth0".to_string()]))
            .collect(),
        services: BTreeMap::from([("ns/web".to_string(), ips.to_vec())]),
        scope: Scope::All,
    }
}

async fn settle() {
    actix::clock::sleep(Duration::from_millis(30)).await;
}

#[actix::test]
async fn takeover_announces_at_once_answers_while_the_lease_holds_and_repeats() {
    let r = rig(vec![Duration::from_millis(60)]);
    let v4: IpAddr = "10.77.0.200".parse().unwrap();
    let v6: IpAddr = "fd00:77::c8".parse().unwrap();
    let report = r.announcer.send(owned(&[v4, v6])).await.unwrap();
    assert_eq!(report.started, vec![v4, v6]);
    settle().await;
    {
        let sent = r.sent.lock().unwrap();
        let IpAddr::V4(a) = v4 else { unreachable!() };
        let IpAddr::V6(b) = v6 else { unreachable!() };
        assert!(sent.contains(&wire::gratuitous_arp(MAC, a)), "GARP at once");
        assert!(
            sent.contains(&wire::unsolicited_advert(MAC, b)),
            "NA at once"
        );
        assert_eq!(sent.len(), 2);
    }
    // The receive path answers for the VIP, not for other addresses.
    let q = who_has(Ipv4Addr::new(10, 77, 0, 200));
    assert!(r.answerer.answer(&q).is_some());
    assert!(r
        .answerer
        .answer(&who_has(Ipv4Addr::new(10, 77, 0, 201)))
        .is_none());
    // The repeat goes out.
    actix::clock::sleep(Duration::from_millis(80)).await;
    assert_eq!(r.sent.lock().unwrap().len(), 4);
    // The service actor knows where it is announced.
    let svc = r
        .announcer
        .send(ServiceAddr("ns/web".into()))
        .await
        .unwrap()
        .expect("a ServiceActor");
    let status = svc.send(GetStatus).await.unwrap();
    assert_eq!(status.announced.len(), 2);
}

#[actix::test]
async fn an_expired_lease_silences_answers_and_announcements() {
    let r = rig(vec![Duration::from_millis(40)]);
    let v4: IpAddr = "10.77.0.200".parse().unwrap();
    r.announcer.send(owned(&[v4])).await.unwrap();
    settle().await;
    let before = r.sent.lock().unwrap().len();
    // Time jumps past the deadline (a paused process waking up).
    r.clock.0.store(r.lease.deadline_ns(), Ordering::SeqCst);
    let q = who_has(Ipv4Addr::new(10, 77, 0, 200));
    assert!(r.answerer.answer(&q).is_none());
    assert_eq!(r.answerer.stats.refused_no_lease.load(Ordering::SeqCst), 1);
    actix::clock::sleep(Duration::from_millis(60)).await;
    assert_eq!(
        r.sent.lock().unwrap().len(),
        before,
        "no repeat without a lease"
    );
    // A renewal brings it back.
    r.lease.extend_to(r.lease.deadline_ns() + 1_000);
    assert!(r.answerer.answer(&q).is_some());
}

#[actix::test]
async fn an_announcement_held_back_for_want_of_a_lease_goes_out_when_it_returns() {
    // No repeats: the takeover's own announcement is the only one.
    let r = rig(vec![]);
    let a = Ipv4Addr::new(10, 77, 0, 200);
    // The node takes the VIP over while its lease has run out (it was just cut off).
    r.clock.0.store(r.lease.deadline_ns(), Ordering::SeqCst);
    r.announcer.send(owned(&[IpAddr::V4(a)])).await.unwrap();
    settle().await;
    actix::clock::sleep(Duration::from_millis(60)).await;
    assert!(
        r.sent.lock().unwrap().is_empty(),
        "announced without a lease"
    );
    // The renewal comes: the clients hear about the new owner within a check.
    r.lease.extend_to(r.lease.deadline_ns() + 1_000_000);
    actix::clock::sleep(crate::responder::HELD_BACK_CHECK * 3).await;
    assert_eq!(
        *r.sent.lock().unwrap(),
        vec![wire::gratuitous_arp(MAC, a)],
        "the held-back announcement, once"
    );
    // A VIP withdrawn while held back is never announced.
    let b = Ipv4Addr::new(10, 77, 0, 201);
    r.clock.0.store(r.lease.deadline_ns(), Ordering::SeqCst);
    r.announcer
        .send(owned(&[IpAddr::V4(a), IpAddr::V4(b)]))
        .await
        .unwrap();
    r.announcer.send(owned(&[IpAddr::V4(a)])).await.unwrap();
    settle().await;
    r.lease.extend_to(r.lease.deadline_ns() + 1_000_000);
    actix::clock::sleep(crate::responder::HELD_BACK_CHECK * 3).await;
    assert!(
        !r.sent
            .lock()
            .unwrap()
            .contains(&wire::gratuitous_arp(MAC, b)),
        "a withdrawn VIP was announced"
    );
}

#[actix::test]
async fn losing_ownership_withdraws_before_the_sync_returns() {
    let r = rig(vec![]);
    let v4: IpAddr = "10.77.0.200".parse().unwrap();
    r.announcer.send(owned(&[v4])).await.unwrap();
    let q = who_has(Ipv4Addr::new(10, 77, 0, 200));
    settle().await;
    assert!(r.answerer.answer(&q).is_some());
    let report = r.announcer.send(owned(&[])).await.unwrap();
    assert_eq!(report.withdrawn, vec![v4]);
    // No waiting: withdrawn means silent, with the lease still valid.
    assert!(r.answerer.answer(&q).is_none());
    assert!(r.lease.valid_at(r.clock.now_ns()));
}

#[actix::test]
async fn an_interface_found_later_is_used_and_a_removed_one_falls_silent_at_once() {
    let (r, eth0) = rig_with(vec![], true);
    let v4: IpAddr = "10.77.0.200".parse().unwrap();
    let q = who_has(Ipv4Addr::new(10, 77, 0, 200));
    // Owned on eth0 before eth0 is open: nothing to answer with.
    r.announcer.send(owned(&[v4])).await.unwrap();
    settle().await;
    assert!(r.answerer.answer(&q).is_none());
    assert!(r.sent.lock().unwrap().is_empty());

    // eth0 appears: the VIP the table lists on it is announced and answered at once.
    r.announcer
        .send(AddInterface("eth0".into(), eth0))
        .await
        .unwrap();
    settle().await;
    assert!(r.answerer.answer(&q).is_some());
    let IpAddr::V4(a) = v4 else { unreachable!() };
    assert!(r
        .sent
        .lock()
        .unwrap()
        .contains(&wire::gratuitous_arp(MAC, a)));

    // eth0 goes: silent before the reply, without waiting for the table.
    r.announcer
        .send(RemoveInterface("eth0".into()))
        .await
        .unwrap();
    assert!(r.answerer.answer(&q).is_none());
}

#[actix::test]
async fn a_service_actor_hears_of_its_service_only_when_it_changes() {
    let r = rig(vec![]);
    let a: IpAddr = "10.77.0.200".parse().unwrap();
    let b: IpAddr = "10.77.0.201".parse().unwrap();
    let status = |r: &Rig| {
        let announcer = r.announcer.clone();
        async move {
            let svc = announcer
                .send(ServiceAddr("ns/web".into()))
                .await
                .unwrap()
                .expect("a ServiceActor");
            svc.send(GetStatus).await.unwrap()
        }
    };
    r.announcer.send(owned(&[a])).await.unwrap();
    r.announcer.send(owned(&[a])).await.unwrap();
    assert_eq!(status(&r).await.ips, vec![a]);
    // The Service gains an address this node does not own: its status says so.
    let mut sync = owned(&[a]);
    sync.services.insert("ns/web".into(), vec![a, b]);
    r.announcer.send(sync).await.unwrap();
    let s = status(&r).await;
    assert_eq!(s.ips, vec![a, b]);
    assert_eq!(s.announced, vec![(a, vec!["eth0".to_string()])]);
}

#[actix::test]
async fn a_partial_sync_changes_what_it_lists_and_leaves_the_rest() {
    let r = rig(vec![]);
    let a: IpAddr = "10.77.0.200".parse().unwrap();
    let b: IpAddr = "10.77.0.201".parse().unwrap();
    let mut both = owned(&[a, b]);
    both.services = BTreeMap::from([("ns/a".to_string(), vec![a]), ("ns/b".to_string(), vec![b])]);
    r.announcer.send(both).await.unwrap();
    settle().await;
    let answers = |ip: &IpAddr| {
        let IpAddr::V4(v4) = ip else { unreachable!() };
        r.answerer.answer(&who_has(*v4)).is_some()
    };
    assert!(answers(&a) && answers(&b));
    // The table moved `a` away (and with it Service ns/a); the sync lists only what changed.
    let only_a = Sync {
        owned: BTreeMap::new(),
        services: BTreeMap::new(),
        scope: Scope::Only {
            vips: [a].into(),
            services: ["ns/a".to_string()].into(),
        },
    };
    let report = r.announcer.send(only_a).await.unwrap();
    assert_eq!(report.withdrawn, vec![a]);
    assert!(report.started.is_empty());
    assert!(!answers(&a), "a is withdrawn");
    assert!(answers(&b), "b was not listed: it stays");
    let service = |key: &str| r.announcer.send(ServiceAddr(key.into()));
    assert!(service("ns/a").await.unwrap().is_none(), "ns/a stopped");
    assert!(service("ns/b").await.unwrap().is_some(), "ns/b kept");
    // A full sync with nothing owned withdraws the rest.
    let report = r.announcer.send(Sync::default()).await.unwrap();
    assert_eq!(report.withdrawn, vec![b]);
    assert!(service("ns/b").await.unwrap().is_none());
}

/// The race the chaos harness found: the receive thread decides to answer, is descheduled
/// before the reply goes out, the VIP is withdrawn and reported, the leader hands it over, and
/// the old reply leaves after the new owner announced. A withdrawal must wait for a reply
/// already decided.
#[test]
fn a_withdrawal_waits_for_a_reply_already_decided() {
    let clock = Arc::new(HandClock(AtomicU64::new(1)));
    let lease = Arc::new(Lease::new());
    lease.set(u64::MAX);
    let answerer = Arc::new(Answerer::new("eth0", MAC, lease, clock));
    let vip = Ipv4Addr::new(10, 77, 0, 240);
    answerer.register(&IpAddr::V4(vip));
    let (decided_tx, decided_rx) = std::sync::mpsc::channel();
    let sent = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let receiver = {
        let (answerer, sent) = (answerer.clone(), sent.clone());
        std::thread::spawn(move || {
            answerer.answer_with(&who_has(vip), |_| {
                decided_tx.send(()).unwrap();
                // Descheduled between the decision and the send.
                std::thread::sleep(std::time::Duration::from_millis(200));
                sent.store(true, Ordering::SeqCst);
            })
        })
    };
    decided_rx.recv().unwrap();
    answerer.withdraw(&IpAddr::V4(vip));
    assert!(
        sent.load(Ordering::SeqCst),
        "the withdrawal returned while a reply decided before it was still to be sent"
    );
    assert!(receiver.join().unwrap(), "that reply was sent");
    assert!(answerer.answer(&who_has(vip)).is_none(), "nothing after");
}
