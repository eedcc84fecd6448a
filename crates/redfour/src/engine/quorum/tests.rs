//! Unit tests of the Redlock rules: pure functions fed the masters' answers, no Redis.

use super::*;

fn tally(nodes: usize, granted: usize, held: usize, failed: usize) -> Tally {
    Tally {
        nodes,
        quorum: nodes / 2 + 1,
        granted,
        held,
        failed,
    }
}

#[test]
fn a_granted_majority_waits_for_the_rest_a_quarter_of_the_validity() {
    let sent = Instant::now();
    let validity = Duration::from_millis(400);
    assert_eq!(
        tally(3, 2, 0, 0).listen(sent, validity),
        Listen::Until(sent + Duration::from_millis(100))
    );
    assert_eq!(
        tally(5, 3, 1, 0).listen(sent, validity),
        Listen::Until(sent + Duration::from_millis(100))
    );
    // Everyone answered: nothing to wait for.
    assert_eq!(tally(3, 3, 0, 0).listen(sent, validity), Listen::Done);
}

#[test]
fn a_held_majority_is_decided_without_the_stragglers() {
    let sent = Instant::now();
    let validity = Duration::from_secs(1);
    // Two of three hold it elsewhere: the third cannot make a majority of grants.
    assert_eq!(tally(3, 0, 2, 0).listen(sent, validity), Listen::Done);
    assert_eq!(tally(5, 1, 3, 0).listen(sent, validity), Listen::Done);
    // One grant and one held: the third decides.
    let open = tally(3, 1, 1, 0);
    assert!(open.open());
    assert_eq!(open.listen(sent, validity), Listen::On);
    // Too few answered to tell a held lock from a lost quorum: every master is heard.
    assert_eq!(tally(3, 0, 1, 1).listen(sent, validity), Listen::On);
    assert_eq!(tally(5, 0, 0, 3).listen(sent, validity), Listen::On);
    assert!(!tally(5, 0, 0, 3).open());
}

#[test]
fn redlock_ttls_need_a_validity_left_after_the_drift_margin() {
    let drift = Drift::default();
    for ms in [1, 2] {
        let err = check_ttl(Duration::from_millis(ms), drift).unwrap_err();
        assert!(err.is_invalid_input(), "{ms}: {err}");
    }
    check_ttl(Duration::from_millis(3), drift).unwrap();
    let wide = Drift {
        ppm: 100_000,
        fixed: Duration::from_millis(100),
    };
    assert!(check_ttl(Duration::from_millis(111), wide).is_err());
    check_ttl(Duration::from_millis(112), wide).unwrap();
}

fn timeout(message: &str) -> Error {
    Error::new(ErrorKind::Timeout, message)
}

fn denied(message: &str) -> Error {
    Error::new(ErrorKind::AccessDenied, message)
}

fn corrupt(message: &str) -> Error {
    Error::new(ErrorKind::CorruptData, message)
}

/// The error an error has as its source, if it is one of ours.
fn cause(err: &Error) -> Option<&Error> {
    std::error::Error::source(err)?.downcast_ref::<Error>()
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

#[test]
fn the_source_of_a_lost_quorum_is_the_first_refusal_else_the_first_failure() {
    let bare = unreachable_quorum(1, 3, 2, Vec::new());
    assert!(bare.is_quorum_lost(), "{bare}");
    assert_eq!(
        bare.message(),
        "1 of 3 masters answered, and a majority is 2"
    );
    assert!(cause(&bare).is_none());

    // Only transient failures: the first one, of equals.
    let err = unreachable_quorum(1, 3, 2, vec![timeout("a"), timeout("b")]);
    assert_eq!(cause(&err).map(Error::message), Some("a"));
    // A refusal wins over a fault of reaching a master that came in before it.
    let err = unreachable_quorum(0, 3, 2, vec![timeout("a"), denied("b"), denied("c")]);
    assert!(err.is_quorum_lost());
    let source = cause(&err).expect("a source");
    assert!(source.is_access_denied());
    assert_eq!(source.message(), "b");
}

#[test]
fn a_lasting_error_speaks_for_itself_only_when_it_leaves_no_majority() {
    // One refusal of three: the two others could still make a majority.
    let mut errors = vec![timeout("a"), denied("b")];
    assert!(lasting(3, 2, &mut errors).is_none());
    assert_eq!(errors.len(), 2, "nothing taken");
    let err = quorum_lost(1, 3, 2, errors);
    assert!(err.is_quorum_lost() && err.is_transient(), "{err}");
    assert_eq!(cause(&err).map(Error::message), Some("b"));

    // Two refusals of three: no majority is possible, the first refusal is the error.
    let mut errors = vec![timeout("a"), denied("b"), denied("c")];
    let err = lasting(3, 2, &mut errors).expect("lasting");
    assert!(err.is_access_denied(), "{err}");
    assert_eq!(err.message(), "b");
    let err = quorum_lost(0, 3, 2, vec![timeout("a"), denied("b"), denied("c")]);
    assert!(err.is_access_denied() && !err.is_transient(), "{err}");
    assert_eq!(err.message(), "b");

    // Foreign data comes first, wherever it is among the refusals.
    let err = quorum_lost(0, 3, 2, vec![denied("a"), corrupt("b"), denied("c")]);
    assert!(err.is_corrupt_data(), "{err}");
    assert_eq!(err.message(), "b");

    // All transient: quorum lost, whatever their number.
    let err = quorum_lost(0, 5, 3, (0..5).map(|_| timeout("t")).collect());
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "0 of 5 masters answered, and a majority is 3"
    );
}

fn verdict(t: Tally, pttls: &[u64], errors: Vec<Error>) -> Verdict {
    let pttls = pttls.iter().copied().map(ms).collect();
    // The masters still out, as `gather` counts them.
    t.verdict(t.pending(), pttls, errors, ms(5))
}

#[test]
fn an_acquire_is_granted_by_a_majority_of_grants_exact_or_clear() {
    assert!(matches!(
        verdict(tally(5, 5, 0, 0), &[], vec![]),
        Verdict::Granted
    ));
    assert!(matches!(
        verdict(tally(5, 4, 1, 0), &[100], vec![]),
        Verdict::Granted
    ));
    // Exactly a majority, the others failed or are still out.
    assert!(matches!(
        verdict(tally(5, 3, 0, 2), &[], vec![timeout("a"), denied("b")]),
        Verdict::Granted
    ));
    assert!(matches!(
        verdict(tally(3, 2, 0, 0), &[], vec![]),
        Verdict::Granted
    ));
}

#[test]
fn an_acquire_one_grant_short_is_held_undecided_or_lost() {
    // A majority answered, one grant short: held, free once one more master is.
    match verdict(tally(5, 2, 1, 2), &[300], vec![timeout("a"), timeout("b")]) {
        Verdict::Held(pttl) => assert_eq!(pttl, ms(300)),
        other => panic!("{other:?}"),
    }
    // Cut off with the outcome still open: undecided, whatever was won.
    assert!(matches!(
        verdict(tally(5, 2, 0, 0), &[], vec![]),
        Verdict::Undecided
    ));
    assert!(matches!(
        verdict(tally(3, 1, 1, 0), &[100], vec![]),
        Verdict::Undecided
    ));
    assert!(matches!(
        verdict(tally(3, 0, 1, 0), &[100], vec![]),
        Verdict::Undecided
    ));
    // Cut off, but the masters still out cannot make a majority of grants.
    assert!(matches!(
        verdict(tally(3, 0, 2, 0), &[100, 200], vec![]),
        Verdict::Held(_)
    ));
    // One answer short of a majority: quorum lost, even with a grant in hand.
    match verdict(
        tally(5, 1, 1, 3),
        &[100],
        vec![timeout("a"), timeout("b"), timeout("c")],
    ) {
        Verdict::Lost(err) => {
            assert!(err.is_quorum_lost(), "{err}");
            assert_eq!(
                err.message(),
                "2 of 5 masters answered, and a majority is 3"
            );
            assert_eq!(cause(&err).map(Error::message), Some("a"));
        }
        other => panic!("{other:?}"),
    }
    match verdict(tally(3, 0, 1, 1), &[100], vec![timeout("a")]) {
        Verdict::Lost(err) => assert!(err.is_quorum_lost(), "{err}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_acquire_that_every_master_failed_reports_the_telling_error() {
    // Unreachable: quorum lost, its source the refusal among the faults.
    match verdict(
        tally(3, 0, 0, 3),
        &[],
        vec![timeout("a"), denied("b"), timeout("c")],
    ) {
        Verdict::Lost(err) => {
            assert!(err.is_quorum_lost(), "{err}");
            assert_eq!(
                err.message(),
                "0 of 3 masters answered, and a majority is 2"
            );
            assert_eq!(cause(&err).map(Error::message), Some("b"));
        }
        other => panic!("{other:?}"),
    }
    // Refused by enough masters to leave no majority: that refusal, foreign data first.
    match verdict(
        tally(3, 0, 0, 3),
        &[],
        vec![denied("a"), timeout("b"), corrupt("c")],
    ) {
        Verdict::Lost(err) => {
            assert!(err.is_corrupt_data(), "{err}");
            assert_eq!(err.message(), "c");
        }
        other => panic!("{other:?}"),
    }
    match verdict(
        tally(3, 0, 0, 3),
        &[],
        vec![timeout("a"), denied("b"), denied("c")],
    ) {
        Verdict::Lost(err) => {
            assert!(err.is_access_denied(), "{err}");
            assert_eq!(err.message(), "b");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_held_lock_is_reported_free_when_enough_masters_would_be() {
    let pttls = [300, 100, 500, 200, 400].map(ms).to_vec();
    let jitter = ms(5);
    // Three free masters needed: the soonest three to expire, whatever their order.
    assert_eq!(next_free(3, 0, pttls.clone(), jitter), ms(300));
    // The ones this attempt won (and releases) are free already.
    assert_eq!(next_free(3, 1, pttls.clone(), jitter), ms(200));
    assert_eq!(next_free(3, 2, pttls.clone(), jitter), ms(100));
    // Ties count once each.
    assert_eq!(
        next_free(3, 0, [200, 100, 200].map(ms).to_vec(), jitter),
        ms(200)
    );
    assert_eq!(
        next_free(3, 1, [200, 200].map(ms).to_vec(), jitter),
        ms(200)
    );
    // Never sooner than the jitter.
    assert_eq!(next_free(3, 2, vec![ms(1)], jitter), jitter);
    assert_eq!(next_free(3, 2, vec![Duration::ZERO], jitter), jitter);
    // Too few held to make up a majority (the rest failed): just the jitter.
    assert_eq!(next_free(3, 0, [100, 200].map(ms).to_vec(), jitter), jitter);
    assert_eq!(next_free(3, 0, Vec::new(), jitter), jitter);
    // A majority won: nothing to wait for.
    assert_eq!(next_free(3, 3, pttls, jitter), jitter);
}

#[test]
fn an_adopted_index_holds_the_lock_only_on_a_majority_within_the_validity() {
    let now = Instant::now();
    let valid_until = now + ms(100);
    // A waiting caller's end still ahead, and reached.
    let (ahead, reached) = (Some(now + ms(50)), Some(now));
    // A clear or an exact majority adopted it in time.
    for took in [5, 3] {
        assert!(matches!(
            adoption("k", took, 5, 3, now, valid_until, None),
            Adoption::Acquired
        ));
        assert!(matches!(
            adoption("k", took, 5, 3, now, valid_until, reached),
            Adoption::Acquired
        ));
    }
    // Past the validity: too late, a majority or not, ahead of the caller's end.
    for took in [5, 3, 2, 0] {
        for end in [None, ahead, reached] {
            assert!(matches!(
                adoption("k", took, 5, 3, valid_until, valid_until, end),
                Adoption::TooLate
            ));
        }
    }
    // One short of a majority, in time: undecided past the caller's end, else lost.
    assert!(matches!(
        adoption("k", 2, 5, 3, now, valid_until, reached),
        Adoption::Undecided
    ));
    for end in [None, ahead] {
        match adoption("k", 2, 5, 3, now, valid_until, end) {
            Adoption::Lost(err) => {
                assert!(err.is_quorum_lost(), "{err}");
                assert_eq!(err.key(), Some("k"));
                assert_eq!(
                    err.message(),
                    "a majority granted the lock, but only 2 of 5 masters adopted its index (a majority is 3); it was released"
                );
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(matches!(
        adoption("k", 0, 3, 2, now, valid_until, None),
        Adoption::Lost(_)
    ));
}

fn released() -> Result<(ReleaseOutcome, i64)> {
    Ok((ReleaseOutcome::Released, 7))
}

fn conflict(stored: i64) -> Result<(ReleaseOutcome, i64)> {
    Ok((ReleaseOutcome::Conflict, stored))
}

fn expired() -> Result<(ReleaseOutcome, i64)> {
    Ok((ReleaseOutcome::Expired, -1))
}

fn decide_release(replies: Vec<Result<(ReleaseOutcome, i64)>>) -> Result<(ReleaseOutcome, i64)> {
    let quorum = replies.len() / 2 + 1;
    release_outcome(replies, quorum, 7)
}

#[test]
fn a_release_is_released_where_any_master_released_it() {
    assert_eq!(
        decide_release(vec![released(), released(), released()]).unwrap(),
        (ReleaseOutcome::Released, 7)
    );
    // One master is enough, whatever the others say short of a majority of conflicts.
    assert_eq!(
        decide_release(vec![released(), expired(), Err(timeout("a"))]).unwrap(),
        (ReleaseOutcome::Released, 7)
    );
    assert_eq!(
        decide_release(vec![
            conflict(9),
            conflict(9),
            released(),
            expired(),
            Err(timeout("a"))
        ])
        .unwrap(),
        (ReleaseOutcome::Released, 7)
    );
    // Tied: two conflicts are no majority of four.
    assert_eq!(
        decide_release(vec![conflict(8), conflict(9), released(), released()]).unwrap(),
        (ReleaseOutcome::Released, 7)
    );
}

#[test]
fn a_release_conflicts_on_a_majority_of_conflicts_or_when_none_released() {
    // A majority holds someone else's index: the first conflict's index, even where the
    // others released.
    assert_eq!(
        decide_release(vec![
            conflict(8),
            conflict(9),
            conflict(8),
            released(),
            released()
        ])
        .unwrap(),
        (ReleaseOutcome::Conflict, 8)
    );
    assert_eq!(
        decide_release(vec![conflict(9), conflict(8), released()]).unwrap(),
        (ReleaseOutcome::Conflict, 9)
    );
    // Nothing released: any conflict (the first) wins over expired and over failures.
    assert_eq!(
        decide_release(vec![expired(), conflict(9), expired()]).unwrap(),
        (ReleaseOutcome::Conflict, 9)
    );
    assert_eq!(
        decide_release(vec![Err(timeout("a")), conflict(9), Err(denied("b"))]).unwrap(),
        (ReleaseOutcome::Conflict, 9)
    );
    assert_eq!(
        decide_release(vec![conflict(8), conflict(9), expired(), expired()]).unwrap(),
        (ReleaseOutcome::Conflict, 8)
    );
}

#[test]
fn a_release_is_expired_unless_every_master_failed() {
    assert_eq!(
        decide_release(vec![expired(), expired(), expired()]).unwrap(),
        (ReleaseOutcome::Expired, -1)
    );
    // One answer is enough: a release does not need a majority to answer.
    assert_eq!(
        decide_release(vec![expired(), Err(timeout("a")), Err(timeout("b"))]).unwrap(),
        (ReleaseOutcome::Expired, -1)
    );
    let err =
        decide_release(vec![Err(timeout("a")), Err(denied("b")), Err(timeout("c"))]).unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "0 of 3 masters answered, and a majority is 2"
    );
    assert_eq!(cause(&err).map(Error::message), Some("b"));
    let err =
        decide_release(vec![Err(denied("a")), Err(timeout("b")), Err(denied("c"))]).unwrap_err();
    assert!(err.is_access_denied(), "{err}");
    assert_eq!(err.message(), "a");
}

/// Feeds `replies` in this order to `answer`, as [`gather`] does, until it says done:
/// how many were heard.
fn hear<T>(replies: Vec<T>, mut answer: impl FnMut(T) -> Listen) -> usize {
    let mut heard = 0;
    for reply in replies {
        heard += 1;
        if answer(reply) == Listen::Done {
            break;
        }
    }
    heard
}

/// What a renewal decides when the masters answer `replies` in this order: how many were
/// heard, and the outcome.
fn decide_renew(nodes: usize, replies: Vec<Result<RenewOutcome>>) -> (usize, Result<RenewOutcome>) {
    let mut tally = RenewTally::new(nodes, nodes / 2 + 1);
    let heard = hear(replies, |reply| {
        tally.add(reply);
        tally.listen()
    });
    (heard, tally.outcome(nodes - heard))
}

/// What the renewal tally of `nodes` masters says after each of `replies`.
fn renew_listens(nodes: usize, replies: Vec<Result<RenewOutcome>>) -> Vec<Listen> {
    let mut tally = RenewTally::new(nodes, nodes / 2 + 1);
    replies
        .into_iter()
        .map(|reply| {
            tally.add(reply);
            tally.listen()
        })
        .collect()
}

#[test]
fn a_renewal_is_decided_by_a_majority_of_renewals() {
    use RenewOutcome::*;
    // Exactly a majority: the third master is not waited for.
    let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Ok(Renewed), Ok(Conflict)]);
    assert_eq!((heard, outcome.unwrap()), (2, Renewed));
    let (heard, outcome) = decide_renew(
        5,
        vec![
            Ok(Missing),
            Ok(Renewed),
            Err(timeout("a")),
            Ok(Renewed),
            Ok(Renewed),
        ],
    );
    assert_eq!((heard, outcome.unwrap()), (5, Renewed));
    let (heard, outcome) = decide_renew(5, (0..5).map(|_| Ok(Renewed)).collect());
    assert_eq!((heard, outcome.unwrap()), (3, Renewed));
}

#[test]
fn a_renewal_one_short_is_lost_as_a_conflict_or_as_missing() {
    use RenewOutcome::*;
    // A majority refused: decided without the rest.
    let (heard, outcome) = decide_renew(3, vec![Ok(Missing), Ok(Missing), Ok(Renewed)]);
    assert_eq!((heard, outcome.unwrap()), (2, Missing));
    // Any conflict among the refusals makes it a conflict.
    let (heard, outcome) = decide_renew(5, vec![Ok(Missing), Ok(Conflict), Ok(Missing)]);
    assert_eq!((heard, outcome.unwrap()), (3, Conflict));
    // One renewal short, with a failure: a majority answered, so not quorum lost.
    let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Ok(Missing), Err(timeout("a"))]);
    assert_eq!((heard, outcome.unwrap()), (3, Missing));
    let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Err(timeout("a")), Ok(Conflict)]);
    assert_eq!((heard, outcome.unwrap()), (3, Conflict));
    // Tied two to two of four: no majority renewed.
    let (heard, outcome) =
        decide_renew(4, vec![Ok(Renewed), Ok(Missing), Ok(Renewed), Ok(Conflict)]);
    assert_eq!((heard, outcome.unwrap()), (4, Conflict));
    // While the masters still out could make a majority renew, they are heard.
    assert_eq!(
        renew_listens(3, vec![Ok(Renewed), Ok(Missing)]),
        [Listen::On, Listen::On]
    );
    assert_eq!(
        renew_listens(3, vec![Ok(Missing), Err(timeout("a"))]),
        [Listen::On, Listen::On]
    );
}

#[test]
fn a_renewal_without_a_majority_answering_is_quorum_lost() {
    use RenewOutcome::*;
    // Every master failed: decided once no majority can answer.
    let (heard, outcome) = decide_renew(
        3,
        vec![Err(timeout("a")), Err(denied("b")), Err(timeout("c"))],
    );
    assert_eq!(heard, 2);
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "0 of 3 masters answered, and a majority is 2"
    );
    assert_eq!(cause(&err).map(Error::message), Some("b"));
    // One answer short of a majority.
    let (heard, outcome) = decide_renew(
        5,
        vec![
            Ok(Renewed),
            Err(timeout("a")),
            Ok(Missing),
            Err(timeout("b")),
            Err(timeout("c")),
        ],
    );
    assert_eq!(heard, 5);
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "2 of 5 masters answered, and a majority is 3"
    );
    assert_eq!(cause(&err).map(Error::message), Some("a"));
    // Refused by enough masters to leave no majority: that refusal.
    let (_, outcome) = decide_renew(3, vec![Err(denied("a")), Err(denied("b"))]);
    let err = outcome.unwrap_err();
    assert!(err.is_access_denied(), "{err}");
    assert_eq!(err.message(), "a");
}

fn held(index: i64, ttl: u64, host: &str) -> Result<LockStatus> {
    Ok(LockStatus {
        id: "id".to_owned(),
        held: true,
        index,
        ttl: Some(ms(ttl)),
        holder: [("host".to_owned(), host.to_owned())].into(),
    })
}

fn free() -> Result<LockStatus> {
    Ok(LockStatus {
        id: "id".to_owned(),
        held: false,
        index: -1,
        ttl: None,
        holder: Default::default(),
    })
}

/// What a status query decides when the masters answer `replies` in this order: how many
/// were heard, and the outcome.
fn decide_status(nodes: usize, replies: Vec<Result<LockStatus>>) -> (usize, Result<LockStatus>) {
    let mut tally = StatusTally::new(nodes, nodes / 2 + 1);
    let heard = hear(replies, |reply| {
        tally.add(reply);
        tally.listen()
    });
    (heard, tally.outcome("id"))
}

#[test]
fn a_status_is_the_index_a_majority_store_with_the_shortest_ttl() {
    // Exactly a majority: the third master is not waited for.
    let (heard, outcome) = decide_status(3, vec![held(7, 300, "a"), held(7, 200, "b"), free()]);
    assert_eq!(heard, 2);
    assert_eq!(outcome.unwrap(), held(7, 200, "b").unwrap());
    let (heard, outcome) = decide_status(
        5,
        vec![
            held(7, 500, "a"),
            free(),
            held(7, 100, "b"),
            Err(timeout("t")),
            held(7, 300, "c"),
        ],
    );
    assert_eq!(heard, 5);
    assert_eq!(outcome.unwrap(), held(7, 100, "b").unwrap());
    // Equal ttls: the first answer of them.
    let (_, outcome) = decide_status(3, vec![held(7, 200, "a"), held(7, 200, "b")]);
    assert_eq!(outcome.unwrap(), held(7, 200, "a").unwrap());
    // A clear majority, answered after a stray index.
    let (heard, outcome) = decide_status(
        5,
        vec![
            held(8, 50, "x"),
            held(7, 400, "a"),
            held(7, 300, "b"),
            held(7, 350, "c"),
        ],
    );
    assert_eq!(heard, 4);
    assert_eq!(outcome.unwrap(), held(7, 300, "b").unwrap());
}

#[test]
fn a_status_without_a_majority_index_is_free() {
    // One short of a majority.
    let (heard, outcome) = decide_status(
        5,
        vec![
            held(7, 100, "a"),
            held(7, 100, "b"),
            free(),
            free(),
            Err(timeout("t")),
        ],
    );
    assert_eq!(heard, 5);
    assert_eq!(outcome.unwrap(), free().unwrap());
    // Decided once no index can reach a majority, without the rest.
    let (heard, outcome) = decide_status(3, vec![free(), free(), held(7, 100, "a")]);
    assert_eq!((heard, outcome.unwrap()), (2, free().unwrap()));
    let (heard, outcome) = decide_status(
        5,
        vec![
            held(7, 100, "a"),
            held(8, 100, "b"),
            free(),
            free(),
            held(7, 100, "c"),
        ],
    );
    assert_eq!((heard, outcome.unwrap()), (4, free().unwrap()));
    // Two indexes, one master each: the third decides.
    let (heard, outcome) = decide_status(3, vec![held(7, 100, "a"), held(8, 100, "b"), free()]);
    assert_eq!((heard, outcome.unwrap()), (3, free().unwrap()));
    // Tied two to two of four.
    let (heard, outcome) = decide_status(
        4,
        vec![
            held(7, 100, "a"),
            held(8, 100, "b"),
            held(7, 100, "c"),
            held(8, 100, "d"),
        ],
    );
    assert_eq!((heard, outcome.unwrap()), (4, free().unwrap()));
}

#[test]
fn a_status_without_a_majority_answering_is_quorum_lost_and_foreign_data_an_error() {
    let (heard, outcome) = decide_status(
        3,
        vec![Err(timeout("a")), Err(denied("b")), held(7, 100, "a")],
    );
    assert_eq!(heard, 2);
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "0 of 3 masters answered, and a majority is 2"
    );
    assert_eq!(cause(&err).map(Error::message), Some("b"));
    // One answer short of a majority.
    let (_, outcome) = decide_status(
        5,
        vec![
            held(7, 100, "a"),
            held(7, 100, "b"),
            Err(timeout("x")),
            Err(timeout("y")),
            Err(timeout("z")),
        ],
    );
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "2 of 5 masters answered, and a majority is 3"
    );
    assert_eq!(cause(&err).map(Error::message), Some("x"));
    // Foreign data on one master decides at once, ahead of everything else.
    let (heard, outcome) = decide_status(
        3,
        vec![held(7, 100, "a"), Err(corrupt("c")), held(7, 100, "b")],
    );
    assert_eq!(heard, 2);
    let err = outcome.unwrap_err();
    assert!(err.is_corrupt_data(), "{err}");
    assert_eq!(err.message(), "c");
    let (_, outcome) = decide_status(3, vec![Err(timeout("a")), Err(corrupt("c"))]);
    assert!(outcome.unwrap_err().is_corrupt_data());
}

#[test]
fn a_ping_needs_a_majority_up() {
    let pings = |nodes: usize, replies: Vec<Result<()>>| {
        let mut tally = PingTally::new(nodes, nodes / 2 + 1);
        let heard = hear(replies, |reply| {
            tally.add(reply);
            tally.listen()
        });
        (heard, tally.outcome())
    };
    // Exactly a majority: the third is not waited for.
    let (heard, outcome) = pings(3, vec![Ok(()), Ok(()), Err(timeout("a"))]);
    assert_eq!(heard, 2);
    outcome.unwrap();
    let (heard, outcome) = pings(5, vec![Ok(()), Err(timeout("a")), Ok(()), Ok(())]);
    assert_eq!(heard, 4);
    outcome.unwrap();
    // One short: decided once the failures leave no majority; the refusal is the source.
    let (heard, outcome) = pings(3, vec![Ok(()), Err(timeout("a")), Err(denied("b"))]);
    assert_eq!(heard, 3);
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(
        err.message(),
        "only 1 of 3 masters answered (a majority is 2)"
    );
    assert_eq!(cause(&err).map(Error::message), Some("b"));
    // Every master failed: decided once a majority failed.
    let (heard, outcome) = pings(
        5,
        vec![
            Err(timeout("a")),
            Err(timeout("b")),
            Err(timeout("c")),
            Ok(()),
        ],
    );
    assert_eq!(heard, 3);
    let err = outcome.unwrap_err();
    assert!(err.is_quorum_lost(), "{err}");
    assert_eq!(cause(&err).map(Error::message), Some("a"));
    // Refused by enough masters to leave no majority: that refusal, foreign data first.
    let (_, outcome) = pings(3, vec![Err(denied("a")), Err(corrupt("b"))]);
    let err = outcome.unwrap_err();
    assert!(err.is_corrupt_data(), "{err}");
    assert_eq!(err.message(), "b");
}
