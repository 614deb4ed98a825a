//! The policy library (`policies/library`): each rule on calls it must allow and deny, load
//! errors naming file and line, and list filtering: a principal sees exactly the tools it may
//! call under at least one assignment of arguments.

mod common;

use clawgate_policies::cedar::{DenyKind, Engine, EngineOptions, PolicySource, Verdict};
use common::*;
use serde_json::json;

fn allows(e: &Engine, p: &clawgate_policies::cedar::PreparedPrincipal, tool: &str, args: serde_json::Value, at: std::time::SystemTime) -> bool {
    e.decide_tool(p, tool, Some(&args), at).is_allow()
}

#[test]
fn base_permit_and_default_deny() {
    let e = engine(&["base-permit.cedar"]);
    let alice = principal("alice", None, &[], &[]);
    assert!(allows(&e, &alice, "demo__read_thread", json!({"thread_id": "t"}), monday_10()));
    let v = e.decide_tool(&anonymous(), "demo__read_thread", Some(&json!({"thread_id": "t"})), monday_10());
    assert!(matches!(v, Verdict::Deny { kind: DenyKind::NoPermit, .. }), "{v:?}");
}

#[test]
fn read_only_task() {
    let e = engine(&["base-permit.cedar", "read-only-task.cedar"]);
    let triage = principal("t", Some("triage"), &[], &[]);
    assert!(allows(&e, &triage, "demo__read_thread", json!({"thread_id": "t"}), monday_10()));
    let v = e.decide_tool(&triage, "demo__add_note", Some(&json!({"title": "a", "text": "b"})), monday_10());
    assert!(matches!(&v, Verdict::Deny { kind: DenyKind::Forbidden, policies, .. } if policies == &vec!["read-only-task".to_owned()]), "{v:?}");
    let other = principal("o", Some("other"), &[], &[]);
    assert!(allows(&e, &other, "demo__add_note", json!({"title": "a", "text": "b"}), monday_10()));
}

#[test]
fn no_destructive_unless_admin() {
    let e = engine(&["base-permit.cedar", "no-destructive.cedar"]);
    let alice = principal("alice", None, &[], &[]);
    let root = principal("root", None, &["admins"], &[]);
    assert!(!allows(&e, &alice, "demo__delete_note", json!({"id": 1}), monday_10()));
    assert!(allows(&e, &root, "demo__delete_note", json!({"id": 1}), monday_10()));
    assert!(allows(&e, &alice, "demo__add_note", json!({"title": "a", "text": "b"}), monday_10()), "not destructive");
}

#[test]
fn per_task_allowlist() {
    let e = engine(&["base-permit.cedar", "task-allowlist.cedar"]);
    let digest = principal("d", Some("mail-digest"), &[], &[]);
    assert!(allows(&e, &digest, "demo__read_thread", json!({"thread_id": "t"}), monday_10()));
    assert!(allows(&e, &digest, "demo__add_note", json!({"title": "a", "text": "b"}), monday_10()));
    assert!(!allows(&e, &digest, "demo__send_email", json!({"to": [], "body": "b"}), monday_10()));
    assert!(!allows(&e, &digest, "demo__delete_note", json!({"id": 1}), monday_10()));
    let other = principal("o", None, &[], &[]);
    assert!(allows(&e, &other, "demo__send_email", json!({"to": [], "body": "b"}), monday_10()));
}

#[test]
fn recipient_allowlist_from_the_token() {
    let e = engine(&["base-permit.cedar", "recipient-allowlist.cedar"]);
    let p = principal("p", None, &[], &["bob@corp.example", "carol@corp.example"]);
    assert!(allows(&e, &p, "demo__send_email", json!({"to": ["bob@corp.example"], "body": "b"}), monday_10()));
    assert!(allows(&e, &p, "demo__send_email", json!({"to": ["carol@corp.example", "bob@corp.example"], "body": "b"}), monday_10()));
    assert!(!allows(&e, &p, "demo__send_email", json!({"to": ["eve@evil.example"], "body": "b"}), monday_10()));
    assert!(!allows(&e, &p, "demo__send_email", json!({"to": ["bob@corp.example", "eve@evil.example"], "body": "b"}), monday_10()));
    let none = principal("n", None, &[], &[]);
    assert!(!allows(&e, &none, "demo__send_email", json!({"to": ["bob@corp.example"], "body": "b"}), monday_10()));
}

#[test]
fn business_hours() {
    let e = engine(&["base-permit.cedar", "business-hours.cedar"]);
    let alice = principal("alice", None, &[], &[]);
    assert!(allows(&e, &alice, "demo__add_note", json!({"title": "a", "text": "b"}), monday_10()));
    assert!(!allows(&e, &alice, "demo__add_note", json!({"title": "a", "text": "b"}), sunday_10()));
    assert!(allows(&e, &alice, "demo__read_thread", json!({"thread_id": "t"}), sunday_10()), "reads any time");
    let late = monday_10() + std::time::Duration::from_secs(9 * 3600); // 19:00
    assert!(!allows(&e, &alice, "demo__add_note", json!({"title": "a", "text": "b"}), late));
    // The same instant at UTC-10 is 09:00 on Monday: inside hours.
    let sources: Vec<PolicySource> = ["base-permit.cedar", "business-hours.cedar"].iter().map(|f| library_file(f)).collect();
    let hawaii = Engine::build(&sources, &inventory(), EngineOptions { utc_offset_minutes: -600, ..EngineOptions::default() }).unwrap();
    assert!(allows(&hawaii, &alice, "demo__add_note", json!({"title": "a", "text": "b"}), late));
}

#[test]
fn admin_only_upstream() {
    let e = engine(&["base-permit.cedar", "admin-only-upstream.cedar"]);
    let alice = principal("alice", None, &[], &[]);
    let root = principal("root", None, &["admins"], &[]);
    assert!(!allows(&e, &alice, "admin__reset", json!({"confirm": true}), monday_10()));
    assert!(allows(&e, &root, "admin__reset", json!({"confirm": true}), monday_10()));
    assert!(allows(&e, &alice, "demo__read_thread", json!({"thread_id": "t"}), monday_10()));
    // Slices: the upstream rule is not even evaluated for the demo upstream's tools.
    assert_eq!(e.slice_len("demo__read_thread"), Some(1));
    assert_eq!(e.slice_len("admin__reset"), Some(2));
}

#[test]
fn lists_show_exactly_what_some_arguments_allow() {
    let e = engine(&LIBRARY);
    let principals = [
        principal("alice", None, &[], &[]),
        principal("root", None, &["admins"], &[]),
        principal("t", Some("triage"), &[], &[]),
        principal("d", Some("mail-digest"), &[], &[]),
        principal("p", None, &[], &["bob@corp.example"]),
        anonymous(),
    ];
    let mut checked = 0;
    for at in [monday_10(), sunday_10()] {
        for p in &principals {
            for t in &inventory().tools {
                let callable = candidate_args(&t.name).iter().any(|a| e.decide_tool(p, &t.name, Some(a), at).is_allow());
                assert_eq!(e.tool_visible(p, &t.name, at), callable, "{} {} at {at:?}", p.info.id, t.name);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 2 * 6 * 6);
}

#[test]
fn a_misspelled_argument_is_rejected_at_load_with_file_and_line() {
    let text = "// comment\n@id(\"r\")\nforbid (principal, action == Action::\"demo__send_email\", resource)\nunless {\n  context.args.recipents.isEmpty()\n};\n";
    let err = Engine::build(&[library_file("base-permit.cedar"), PolicySource { file: "policies/mail.cedar".into(), text: text.into() }], &inventory(), EngineOptions::default()).unwrap_err();
    assert_eq!(err.file, "policies/mail.cedar");
    assert_eq!(err.line, Some(5), "{err}");
    assert!(err.message.contains("recipents"), "{err}");
    // A syntax error names its line too.
    let err = Engine::build(&[PolicySource { file: "x.cedar".into(), text: "permit (principal, action, resource)\nwhen { principal.kind == };".into() }], &inventory(), EngineOptions::default()).unwrap_err();
    assert_eq!((err.file.as_str(), err.line), ("x.cedar", Some(2)), "{err}");
    // A typo in a tool name of a listed upstream is an error, not a forbid that never matches.
    let err = Engine::build(&[PolicySource { file: "y.cedar".into(), text: "forbid (principal, action == Action::\"demo__delete_nte\", resource);".into() }], &inventory(), EngineOptions::default()).unwrap_err();
    assert!(err.message.contains("demo__delete_nte"), "{err}");
    // For an upstream whose tools are not listed yet, it is a warning.
    let mut inv = inventory();
    inv.upstreams[0].known = false;
    inv.tools.retain(|t| t.upstream != "demo");
    let e = Engine::build(&[PolicySource { file: "y.cedar".into(), text: "forbid (principal, action == Action::\"demo__delete_nte\", resource);".into() }], &inv, EngineOptions::default()).unwrap();
    assert_eq!(e.warnings.len(), 1);
}

#[test]
fn ask_is_an_allow_that_needs_approval() {
    let src = PolicySource { file: "ask.cedar".into(), text: "@id(\"send-ask\")\n@ask(\"Send it?\")\npermit (principal, action in Action::\"send\", resource);\npermit (principal, action in Action::\"read\", resource);".into() };
    let e = Engine::build(&[src], &inventory(), EngineOptions::default()).unwrap();
    let alice = principal("alice", None, &[], &[]);
    assert_eq!(e.decide_tool(&alice, "demo__send_email", Some(&json!({"to": [], "body": "b"})), monday_10()), Verdict::Ask { policy: "send-ask".into(), message: "Send it?".into() });
    assert!(e.decide_tool(&alice, "demo__read_thread", Some(&json!({"thread_id": "t"})), monday_10()).is_allow());
    let bad = PolicySource { file: "bad.cedar".into(), text: "@ask(\"no\")\nforbid (principal, action, resource);".into() };
    assert!(Engine::build(&[bad], &inventory(), EngineOptions::default()).unwrap_err().message.contains("@ask"));
}

#[test]
fn arguments_that_do_not_fit_the_types_deny() {
    let e = engine(&["base-permit.cedar"]);
    let alice = principal("alice", None, &[], &[]);
    let v = e.decide_tool(&alice, "demo__delete_note", Some(&json!({"id": "one"})), monday_10());
    assert!(matches!(v, Verdict::Deny { kind: DenyKind::Error, .. }), "{v:?}");
    let v = e.decide_tool(&alice, "demo__unknown", None, monday_10());
    assert!(matches!(v, Verdict::Deny { kind: DenyKind::Error, .. }), "{v:?}");
}

#[test]
fn prompts_and_resources_are_decided_by_their_own_actions() {
    let src = PolicySource {
        file: "pr.cedar".into(),
        text: "permit (principal in Group::\"mail\", action == Action::\"get_prompt\", resource in Upstream::\"demo\");\npermit (principal, action == Action::\"read_resource\", resource) when { context.uri like \"demo+file:///public/*\" };\n".into(),
    };
    let e = Engine::build(&[src], &inventory(), EngineOptions::default()).unwrap();
    let mail = principal("m", None, &["mail"], &[]);
    let other = principal("o", None, &[], &[]);
    assert!(e.decide_prompt(&mail, "demo", "demo__summarize_thread", monday_10()).is_allow());
    assert!(!e.decide_prompt(&other, "demo", "demo__summarize_thread", monday_10()).is_allow());
    assert!(!e.decide_prompt(&mail, "admin", "admin__x", monday_10()).is_allow());
    assert!(e.decide_resource(&other, "demo", "demo+file:///public/readme.txt", monday_10()).is_allow());
    assert!(!e.decide_resource(&other, "demo", "demo+file:///reports/q3.txt", monday_10()).is_allow());
}

// ---------------------------------------------------------------------------------------------
// The data-flow label rules, on label views built the way the gateway builds them.

#[allow(clippy::unwrap_used, reason = "test helpers: a panic is a failed test")]
mod label_rules {
    use std::collections::{BTreeMap, BTreeSet};

    use clawgate_policies::cedar::{Engine, EngineOptions, Verdict};
    use clawgate_policies::labels::{ArgLabel, ArgRoles, Label, LabelView};
    use serde_json::{Value, json};

    use super::common::*;

    fn engine(files: &[&str]) -> Engine {
        let mut inv = inventory();
        for t in &mut inv.tools {
            if t.name == "demo__send_email" {
                t.attrs.category = "messaging".into();
            }
        }
        let mut sources = vec![library_file("base-permit.cedar")];
        sources.extend(files.iter().map(|f| library_file(f)));
        Engine::build(&sources, &inv, EngineOptions::default()).unwrap()
    }

    fn label(trusted: bool, readers: Option<&[&str]>) -> Label {
        Label { trusted, readers: readers.map(|r| r.iter().map(|s| (*s).to_owned()).collect()), origins: BTreeSet::new() }
    }

    fn view(to: Label, body: Label, session: Label, strict: bool, args: &Value) -> LabelView {
        let mk = |l: Label| ArgLabel { label: l, sources: BTreeSet::new(), matched: BTreeSet::new() };
        let traced = BTreeMap::from([("to".to_owned(), mk(to)), ("body".to_owned(), mk(body))]);
        let roles = ArgRoles { control: BTreeSet::from(["to".to_owned()]), recipients: BTreeSet::from(["to".to_owned()]) };
        LabelView::build(session, traced, Some(args), &roles, strict)
    }

    fn decide(e: &Engine, v: &LabelView, args: &Value) -> Verdict {
        e.decide_tool_labelled(&principal("me", None, &[], &[]), "demo__send_email", Some(args), v, monday_10())
    }

    const THREAD: &[&str] = &["alice@corp.example", "bob@corp.example", "me@corp.example"];

    #[test]
    fn trusted_control_needs_a_trusted_recipient() {
        let e = engine(&["labels-trusted-control.cedar"]);
        let args = json!({"to": ["bob@corp.example"], "body": "b"});
        assert!(decide(&e, &view(label(true, Some(THREAD)), Label::bottom(), Label::bottom(), false, &args), &args).is_allow());
        let v = decide(&e, &view(Label::model_generated(), Label::bottom(), Label::bottom(), false, &args), &args);
        assert!(matches!(&v, Verdict::Deny { policies, .. } if policies == &vec!["labels-trusted-control".to_owned()]), "{v:?}");
        assert!(!decide(&e, &view(label(false, Some(THREAD)), Label::bottom(), Label::bottom(), false, &args), &args).is_allow(), "an address from untrusted content");
        assert!(decide(&e, &view(Label::intent(), Label::bottom(), Label::bottom(), false, &args), &args).is_allow(), "the user's intent");
    }

    #[test]
    fn readers_must_include_every_recipient() {
        let e = engine(&["labels-readers.cedar"]);
        let on_thread = json!({"to": ["bob@corp.example", "Alice@corp.example"], "body": "b"});
        let body = label(true, Some(THREAD));
        assert!(decide(&e, &view(Label::intent(), body.clone(), Label::bottom(), false, &on_thread), &on_thread).is_allow());
        let off = json!({"to": ["bob@corp.example", "carol@corp.example"], "body": "b"});
        let v = decide(&e, &view(Label::intent(), body.clone(), Label::bottom(), false, &off), &off);
        assert!(matches!(&v, Verdict::Deny { policies, .. } if policies == &vec!["labels-readers".to_owned()]), "{v:?}");
        assert!(decide(&e, &view(Label::intent(), Label::model_generated(), Label::bottom(), false, &off), &off).is_allow(), "model text is public");
        assert!(!decide(&e, &view(Label::intent(), label(false, Some(&[])), Label::bottom(), false, &off), &off).is_allow(), "private to nobody");
    }

    #[test]
    fn untrusted_content_to_messaging_asks() {
        let e = engine(&["labels-ask-untrusted-messaging.cedar"]);
        let args = json!({"to": ["bob@corp.example"], "body": "b"});
        assert!(decide(&e, &view(Label::intent(), label(true, Some(THREAD)), Label::bottom(), false, &args), &args).is_allow());
        let v = decide(&e, &view(Label::intent(), Label::model_generated(), Label::bottom(), false, &args), &args);
        assert!(matches!(&v, Verdict::Ask { policy, .. } if policy == "labels-ask-untrusted-messaging"), "{v:?}");
        // Not a messaging sink: no question.
        let note = json!({"title": "t", "text": "x"});
        assert!(e.decide_tool_labelled(&principal("me", None, &[], &[]), "demo__add_note", Some(&note), &LabelView::build(Label::bottom(), BTreeMap::from([("text".to_owned(), ArgLabel { label: Label::model_generated(), sources: BTreeSet::new(), matched: BTreeSet::new() })]), Some(&note), &ArgRoles::default(), false), monday_10()).is_allow());
    }

    #[test]
    fn strict_mode_asks_once_the_session_is_untrusted() {
        let e = engine(&["labels-strict.cedar"]);
        let args = json!({"to": ["bob@corp.example"], "body": "b"});
        let tainted = label(false, None);
        assert!(decide(&e, &view(Label::intent(), Label::bottom(), tainted.clone(), false, &args), &args).is_allow(), "strict off");
        assert!(decide(&e, &view(Label::intent(), Label::bottom(), Label::bottom(), true, &args), &args).is_allow(), "nothing untrusted yet");
        let v = decide(&e, &view(Label::intent(), Label::bottom(), tainted, true, &args), &args);
        assert!(matches!(&v, Verdict::Ask { policy, .. } if policy == "labels-strict"), "{v:?}");
    }

    /// The verdict cache is keyed by what the slice reads: a call whose labels read differently
    /// is decided afresh, and an equal one gets the same verdict as an uncached engine.
    #[test]
    fn cached_verdicts_follow_every_attribute_the_policies_read() {
        let cached = engine(&["labels-trusted-control.cedar", "labels-readers.cedar"]);
        let mut inv = inventory();
        for t in &mut inv.tools {
            if t.name == "demo__send_email" {
                t.attrs.category = "messaging".into();
            }
        }
        let sources: Vec<_> = ["base-permit.cedar", "labels-trusted-control.cedar", "labels-readers.cedar"].iter().map(|f| library_file(f)).collect();
        let uncached = Engine::build(&sources, &inv, clawgate_policies::cedar::EngineOptions { decision_cache: 0, ..Default::default() }).unwrap();
        let on = json!({"to": ["bob@corp.example"], "body": "b"});
        let off = json!({"to": ["carol@corp.example"], "body": "b"});
        let body = label(true, Some(THREAD));
        let cases = [
            view(Label::intent(), body.clone(), Label::bottom(), false, &on),
            view(Label::model_generated(), body.clone(), Label::bottom(), false, &on),
            view(Label::intent(), body.clone(), Label::bottom(), false, &off),
            view(Label::intent(), Label::model_generated(), Label::bottom(), false, &off),
        ];
        let argses = [&on, &on, &off, &off];
        let expected = [true, false, false, true];
        // Twice round: the second pass is answered from the cache.
        for round in 0..2 {
            for ((v, args), want) in cases.iter().zip(argses).zip(expected) {
                let a = decide(&cached, v, args);
                assert_eq!(a, decide(&uncached, v, args), "round {round}");
                assert_eq!(a.is_allow(), want, "round {round}: {a:?}");
            }
        }
    }
}
