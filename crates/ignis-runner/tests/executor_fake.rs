//! Executor logic on the fake backend (the agent runs as a host child process): one VM per
//! run, DAG without stages, fail-fast, job timeout, cancellation, masking, isolation.

// An integration test crate is a test module already.
#![allow(clippy::tests_outside_test_module)]

use ignis_runner::events::{EventBus, JobResult, Recorder, RunEvent, Stamped};
use ignis_runner::executor::{
    CancelSignals, ExecutorConfig, Isolation, ProviderSessions, RunRequest, WorkflowExecutor,
};
use ignis_runner::runtime::contexts::RunInfo;
use ignis_runner::runtime::mask::Masker;
use ignis_vm::fake::{FakeConfig, FakeProvider};
use ignis_vm::profile::ProfileConfig;
use ignis_vm::{Backend, VmProvider};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

struct Harness {
    fake: Arc<FakeProvider>,
    repo: tempfile::TempDir,
    /// Where remote actions come from (never the network in these tests).
    actions_base_url: String,
}

fn harness() -> Option<Harness> {
    match FakeConfig::discover() {
        Ok(c) => Some(Harness {
            fake: Arc::new(FakeProvider::new(c)),
            repo: tempfile::tempdir().expect("tempdir"),
            actions_base_url: "file:///nonexistent/ignis-actions".into(),
        }),
        Err(e) => {
            eprintln!("skipped: no ignis-agent binary for the fake backend: {e}");
            None
        }
    }
}

struct Outcome {
    result: JobResult,
    events: Vec<Stamped>,
}

impl Outcome {
    fn job(&self, id: &str) -> Vec<JobResult> {
        self.events
            .iter()
            .filter_map(|e| match &e.event {
                RunEvent::JobFinished { job_id, result, .. } if job_id == id => Some(*result),
                _ => None,
            })
            .collect()
    }
    fn lines(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match &e.event {
                RunEvent::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
    fn t_of(&self, pred: impl Fn(&RunEvent) -> bool) -> u64 {
        self.events
            .iter()
            .find(|e| pred(&e.event))
            .map(|e| e.t_ms)
            .expect("event present")
    }
}

impl Harness {
    async fn run_with(
        &self,
        yaml: &str,
        isolation: Isolation,
        secrets: &[(&str, &str)],
        signals: CancelSignals,
    ) -> Outcome {
        let wf = ignis_workflow::parse("w.yml", yaml).expect("valid workflow");
        let provider: Arc<dyn VmProvider> = self.fake.clone();
        let sessions = Arc::new(ProviderSessions::new(
            provider,
            ProfileConfig::default(),
            Some(Backend::Fake),
            8,
        ));
        let mut config = ExecutorConfig::new(self.repo.path().to_path_buf());
        config.isolation = isolation;
        config.vm_root = self.repo.path().join("vm").display().to_string();
        config.action_cache = self.repo.path().join("action-cache");
        config.actions_base_url = self.actions_base_url.clone();
        let ex = WorkflowExecutor::new(sessions, config);
        let bus = EventBus::new();
        let rec = Recorder::new();
        bus.subscribe(rec.clone());
        let req = RunRequest {
            workflow: Arc::new(wf),
            workflow_path: "w.yml".into(),
            info: RunInfo {
                event_name: "push".into(),
                event: serde_json::json!({}),
                run_id: "1".into(),
                run_number: 1,
                actor: None,
                repository: None,
                workflow: "w".into(),
                workflow_path: "w.yml".into(),
            },
            only_job: None,
            secrets: secrets
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            vars: BTreeMap::new(),
            inputs: serde_json::Map::new(),
            matrix_filter: vec![],
            env: Default::default(),
            journal: None,
            resume: None,
        };
        let res = ex.execute(req, bus, Masker::new(), signals).await;
        Outcome {
            result: res.result,
            events: rec.events(),
        }
    }

    async fn run(&self, yaml: &str) -> Outcome {
        self.run_with(yaml, Isolation::Workflow, &[], CancelSignals::default())
            .await
    }
}

#[tokio::test]
async fn one_vm_for_all_steps_and_jobs() {
    let Some(h) = harness() else { return };
    let steps: String = (0..10)
        .map(|i| format!("      - run: echo step-{i}\n"))
        .collect();
    let yaml = format!(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n{steps}  b:\n    runs-on: ubuntu-latest\n    needs: a\n    steps:\n{steps}"
    );
    let out = h.run(&yaml).await;
    assert_eq!(out.result, JobResult::Success);
    let stats = h.fake.stats();
    assert_eq!(stats.allocations, 1, "one VM for the whole run");
    assert_eq!(stats.releases, 1);
    assert_eq!(stats.live, 0);
    let vms: std::collections::BTreeSet<String> = out
        .events
        .iter()
        .filter_map(|e| match &e.event {
            RunEvent::StepStarted { vm_id, .. } => Some(vm_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(vms.len(), 1, "every step ran in the same VM");
    assert_eq!(
        out.lines()
            .iter()
            .filter(|l| l.starts_with("step-"))
            .count(),
        20
    );
    // Setup before the first job, cleanup after the last, release last.
    let setup = out.t_of(|e| {
        matches!(
            e,
            RunEvent::CommandFinished {
                phase: ignis_runner::events::Phase::Setup,
                ..
            }
        )
    });
    let job = out.t_of(|e| matches!(e, RunEvent::JobStarted { .. }));
    assert!(setup <= job);
    let pos = |pred: &dyn Fn(&RunEvent) -> bool| {
        out.events
            .iter()
            .position(|e| pred(&e.event))
            .expect("present")
    };
    assert!(
        pos(&|e| matches!(
            e,
            RunEvent::CommandFinished {
                phase: ignis_runner::events::Phase::Cleanup,
                ..
            }
        )) < pos(&|e| matches!(e, RunEvent::SessionReleased { .. }))
    );
}

#[tokio::test]
async fn isolation_job_gives_each_leg_its_own_vm() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      matrix:\n        n: [1, 2, 3]\n    steps:\n      - run: echo ${{ matrix.n }}\n";
    let out = h
        .run_with(yaml, Isolation::Job, &[], CancelSignals::default())
        .await;
    assert_eq!(out.result, JobResult::Success);
    assert_eq!(h.fake.stats().allocations, 3);
    assert_eq!(h.fake.stats().live, 0);
}

#[tokio::test]
async fn dag_without_stages() {
    // c needs only a; b (slow) must not delay c: a true DAG, not act's stages.
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo a\n  b:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 2\n  c:\n    runs-on: ubuntu-latest\n    needs: a\n    steps:\n      - run: echo c\n";
    let out = h.run(yaml).await;
    assert_eq!(out.result, JobResult::Success);
    let c_done = out.t_of(|e| matches!(e, RunEvent::JobFinished { job_id, .. } if job_id == "c"));
    let b_done = out.t_of(|e| matches!(e, RunEvent::JobFinished { job_id, .. } if job_id == "b"));
    assert!(
        c_done < b_done,
        "c finished before the independent slow job b"
    );
}

#[tokio::test]
async fn fail_fast_cancels_other_legs() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  m:\n    runs-on: ubuntu-latest\n    strategy:\n      max-parallel: 2\n      matrix:\n        n: [1, 2, 3, 4]\n    steps:\n      - run: if [ ${{ matrix.n }} = 1 ]; then exit 1; else sleep 30; fi\n";
    let out = h.run(yaml).await;
    assert_eq!(out.result, JobResult::Failure);
    let results = out.job("m");
    assert_eq!(results.len(), 4);
    assert_eq!(
        results.iter().filter(|r| **r == JobResult::Failure).count(),
        1
    );
    assert_eq!(
        results
            .iter()
            .filter(|r| **r == JobResult::Cancelled)
            .count(),
        3,
        "{results:?}"
    );
    assert_eq!(h.fake.stats().live, 0);
}

#[tokio::test]
async fn job_timeout_fails_the_job_and_always_steps_run() {
    let Some(h) = harness() else { return };
    // 0.02 minutes = 1.2 s: fractional timeouts are honoured.
    let yaml = "on: push\njobs:\n  t:\n    runs-on: ubuntu-latest\n    timeout-minutes: 0.02\n    steps:\n      - run: sleep 30\n      - if: always()\n        run: echo after-timeout\n  s:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 30\n        timeout-minutes: 0.01\n        continue-on-error: true\n      - run: echo next\n";
    let out = h.run(yaml).await;
    assert_eq!(out.job("t"), vec![JobResult::Failure]);
    assert_eq!(
        out.job("s"),
        vec![JobResult::Success],
        "continue-on-error keeps the job green"
    );
    assert!(out.lines().iter().any(|l| l == "after-timeout"));
    assert!(out.lines().iter().any(|l| l == "next"));
}

#[tokio::test]
async fn cancellation_runs_always_steps_then_releases() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  c:\n    runs-on: ubuntu-latest\n    steps:\n      - run: sleep 30\n      - run: echo not-this\n      - if: cancelled()\n        run: echo cleanup-step\n";
    let signals = CancelSignals::default();
    let s2 = signals.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        s2.cancel.cancel();
    });
    let out = h.run_with(yaml, Isolation::Workflow, &[], signals).await;
    assert_eq!(out.result, JobResult::Cancelled);
    assert_eq!(out.job("c"), vec![JobResult::Cancelled]);
    let lines = out.lines();
    assert!(lines.iter().any(|l| l == "cleanup-step"));
    assert!(!lines.iter().any(|l| l == "not-this"));
    assert_eq!(h.fake.stats().live, 0);
}

#[tokio::test]
async fn secrets_and_added_masks_never_reach_events() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  m:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n          echo \"token=${{ secrets.TOKEN }}!\"\n          echo \"::add-mask::dyn-value\"\n          echo \"see dyn-value here\"\n          echo \"::warning::warn ${{ secrets.TOKEN }}\"\n          echo \"## ${{ secrets.TOKEN }}\" >> $GITHUB_STEP_SUMMARY\n          printf 'l1\\nl2\\n'\n";
    let out = h
        .run_with(
            yaml,
            Isolation::Workflow,
            &[("TOKEN", "s3cr3t-v4lue")],
            CancelSignals::default(),
        )
        .await;
    assert_eq!(out.result, JobResult::Success);
    let all = serde_json::to_string(&out.events).expect("json");
    assert!(!all.contains("s3cr3t-v4lue"), "secret leaked: {all}");
    assert!(!all.contains("see dyn-value"), "add-mask value leaked");
    assert!(out.lines().iter().any(|l| l == "token=***!"));
    assert!(out.lines().iter().any(|l| l == "see *** here"));
}

#[tokio::test]
async fn outputs_needs_and_skipped_propagation() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    outputs:\n      x: ${{ steps.s.outputs.x }}\n    steps:\n      - id: s\n        run: |\n          echo x=hello >> $GITHUB_OUTPUT\n          echo 'm<<EOF' >> $GITHUB_OUTPUT\n          echo multi >> $GITHUB_OUTPUT\n          echo EOF >> $GITHUB_OUTPUT\n  b:\n    runs-on: ubuntu-latest\n    needs: a\n    steps:\n      - run: echo got-${{ needs.a.outputs.x }}-${{ needs.a.result }}\n      - run: exit 1\n  c:\n    runs-on: ubuntu-latest\n    needs: b\n    steps:\n      - run: echo never\n  d:\n    runs-on: ubuntu-latest\n    needs: c\n    if: always()\n    steps:\n      - run: echo d-${{ needs.c.result }}\n";
    let out = h.run(yaml).await;
    assert_eq!(out.result, JobResult::Failure);
    assert!(out.lines().iter().any(|l| l == "got-hello-success"));
    assert_eq!(out.job("b"), vec![JobResult::Failure]);
    assert_eq!(out.job("c"), vec![JobResult::Skipped]);
    assert!(out.lines().iter().any(|l| l == "d-skipped"));
}

/// `hashFiles` as GitHub defines it, computed here independently: SHA-256 over the SHA-256
/// of each file, in path order.
fn expected_hash(contents: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut outer = Sha256::new();
    for c in contents {
        outer.update(Sha256::digest(c));
    }
    outer
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn hash_files_digests_workspace_files_in_the_machine() {
    let Some(h) = harness() else { return };
    let yaml = r#"on: push
jobs:
  a:
    runs-on: ubuntu-latest
    steps:
      - run: |
          mkdir -p sub 'deep/x'
          printf one > a.txt
          printf 'two\n' > sub/b.txt
          printf three > 'deep/x/sp ace.txt'
          printf ignored > c.rs
          mkdir d.txt
      - run: echo "all=${{ hashFiles('**/*.txt') }}"
      - env:
          SUB: ${{ hashFiles('sub', '!**/*.rs') }}
        if: hashFiles('**/*.txt') != ''
        run: echo "sub=$SUB none=[${{ hashFiles('**/*.nomatch') }}]"
      - run: printf changed > a.txt
      - run: echo "after=${{ hashFiles('*.txt') }}"
      - run: |
          mkdir -p act
          # `$` kept apart so that ignis does not evaluate these expressions itself.
          D='$'
          cat > act/action.yml <<EOF
          name: h
          outputs:
            h:
              value: ${D}{{ hashFiles('sub/*.txt') }}
          runs:
            using: composite
            steps:
              - run: echo "inner=${D}{{ hashFiles('a.txt') }}"
                shell: sh
          EOF
      - id: comp
        uses: ./act
      - run: echo "outer=${{ steps.comp.outputs.h }}"
"#;
    let out = h.run(yaml).await;
    let lines = out.lines();
    assert_eq!(out.result, JobResult::Success, "{lines:#?}");
    let all = expected_hash(&[b"one", b"three", b"two\n"]);
    assert!(lines.contains(&format!("all={all}")), "{lines:#?}");
    let sub = expected_hash(&[b"two\n"]);
    assert!(lines.contains(&format!("sub={sub} none=[]")), "{lines:#?}");
    let after = expected_hash(&[b"changed"]);
    assert!(lines.contains(&format!("after={after}")), "{lines:#?}");
    // In a composite action's steps and in its outputs.
    assert!(lines.contains(&format!("inner={after}")), "{lines:#?}");
    assert!(lines.contains(&format!("outer={sub}")), "{lines:#?}");
}

/// A bare git repository `base/owner/repo` whose tag `v1` holds a composite action.
fn bare_action_repo(base: &std::path::Path, owner: &str, repo: &str) {
    let work = tempfile::tempdir().expect("tempdir");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(work.path(), &["init", "-q", "-b", "main"]);
    std::fs::write(
        work.path().join("action.yml"),
        "name: greet\ninputs:\n  who:\n    default: nobody\noutputs:\n  said:\n    value: ${{ steps.s.outputs.said }}\nruns:\n  using: composite\n  steps:\n    - id: s\n      shell: sh\n      run: echo \"remote-hello-${{ inputs.who }}\"; echo said=yes >> \"$GITHUB_OUTPUT\"\n",
    )
    .expect("write");
    git(work.path(), &["add", "action.yml"]);
    git(work.path(), &["commit", "-qm", "action"]);
    git(work.path(), &["tag", "v1"]);
    let bare = base.join(owner).join(repo);
    std::fs::create_dir_all(&bare).expect("mkdir");
    git(&bare, &["init", "-q", "--bare"]);
    git(
        work.path(),
        &[
            "push",
            "-q",
            bare.to_str().expect("utf-8 path"),
            "main",
            "v1",
        ],
    );
}

#[tokio::test]
async fn remote_action_from_a_local_base_url() {
    let Some(mut h) = harness() else { return };
    let base = tempfile::tempdir().expect("tempdir");
    bare_action_repo(base.path(), "me", "greet");
    h.actions_base_url = format!("file://{}", base.path().display());
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - id: g\n        uses: me/greet@v1\n        with:\n          who: ignis\n      - run: echo said-${{ steps.g.outputs.said }}\n";
    let out = h.run(yaml).await;
    let lines = out.lines();
    assert_eq!(out.result, JobResult::Success, "{lines:#?}");
    assert!(
        lines.contains(&"remote-hello-ignis".to_string()),
        "{lines:#?}"
    );
    assert!(lines.contains(&"said-yes".to_string()), "{lines:#?}");
    assert!(
        h.repo
            .path()
            .join("action-cache/me/greet/v1/action.yml")
            .exists()
    );
}

#[tokio::test]
async fn unreachable_remote_action_fails_the_step_naming_it() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: me/missing@v3\n      - if: always()\n        run: echo after\n";
    let out = h.run(yaml).await;
    let lines = out.lines();
    assert_eq!(out.result, JobResult::Failure, "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("##[error]") && l.contains("me/missing@v3")),
        "{lines:#?}"
    );
    assert!(lines.contains(&"after".to_string()), "{lines:#?}");
}

/// A run of `yaml` recorded in `record`, continuing `resume` when given.
async fn run_recorded(
    h: &Harness,
    yaml: &str,
    vars: &[(&str, &str)],
    record: Arc<std::sync::Mutex<ignis_runner::runs::RunRecord>>,
    resume: Option<ignis_runner::runs::WorkflowRun>,
) -> Outcome {
    use ignis_runner::executor::{Resume, SnapshotPolicy};
    use ignis_runner::runs::{Redactor, RunJournal, RunStore};
    let wf = ignis_workflow::parse("w.yml", yaml).expect("valid workflow");
    let sessions = Arc::new(ProviderSessions::new(
        h.fake.clone(),
        ProfileConfig::default(),
        Some(Backend::Fake),
        8,
    ));
    let mut config = ExecutorConfig::new(h.repo.path().to_path_buf());
    config.isolation = Isolation::Job;
    config.vm_root = h.repo.path().join("vm").display().to_string();
    config.snapshots = SnapshotPolicy {
        setup: false,
        steps: true,
    };
    let ex = WorkflowExecutor::new(sessions, config);
    let bus = EventBus::new();
    let rec = Recorder::new();
    bus.subscribe(rec.clone());
    let masker = Masker::new();
    let journal = RunJournal::new(
        record,
        0,
        RunStore::at(&h.repo.path().join("state")),
        Redactor::new(&BTreeMap::new(), masker.clone()),
    );
    let req = RunRequest {
        workflow: Arc::new(wf),
        workflow_path: "w.yml".into(),
        info: RunInfo {
            event_name: "push".into(),
            event: serde_json::json!({}),
            run_id: "1".into(),
            run_number: 1,
            actor: None,
            repository: None,
            workflow: "w".into(),
            workflow_path: "w.yml".into(),
        },
        only_job: None,
        secrets: BTreeMap::new(),
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        inputs: serde_json::Map::new(),
        matrix_filter: vec![],
        env: Default::default(),
        journal: Some(journal),
        resume: resume.map(|previous| {
            Arc::new(Resume {
                run_id: "r1".into(),
                previous,
            })
        }),
    };
    let res = ex.execute(req, bus, masker, CancelSignals::default()).await;
    Outcome {
        result: res.result,
        events: rec.events(),
    }
}

/// Resume with `--isolation job` and a matrix: the leg that succeeded is kept (no session),
/// the failed leg gets a session restored from its step snapshot and continues at its
/// failed step with its `GITHUB_ENV` and `steps` outputs restored; the job downstream runs.
#[tokio::test]
async fn resume_keeps_succeeded_legs_and_continues_the_failed_one() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    strategy:\n      fail-fast: false\n      matrix:\n        n: [1, 2]\n    steps:\n      - id: first\n        run: |\n          echo \"LEG_ENV=v${{ matrix.n }}\" >> \"$GITHUB_ENV\"\n          echo \"o=out${{ matrix.n }}\" >> \"$GITHUB_OUTPUT\"\n      - id: check\n        run: |\n          test \"${{ matrix.n }}\" = 1 || test \"${{ vars.FIXED }}\" = yes\n          echo \"check ${{ matrix.n }} $LEG_ENV ${{ steps.first.outputs.o }}\"\n  after:\n    needs: a\n    runs-on: ubuntu-latest\n    steps:\n      - run: echo after\n";
    let record = Arc::new(std::sync::Mutex::new(ignis_runner::runs::RunRecord {
        version: ignis_runner::runs::RECORD_VERSION,
        run_id: "r1".into(),
        attempt: 1,
        created_unix_ms: 0,
        updated_unix_ms: 0,
        pid: std::process::id(),
        repo_dir: h.repo.path().to_path_buf(),
        event_name: "push".into(),
        event: serde_json::json!({}),
        only_job: None,
        inputs: vec![],
        vars: BTreeMap::new(),
        env: Default::default(),
        secret_names: vec![],
        matrix_filter: vec![],
        actor: None,
        backend: Backend::Fake,
        isolation: "job".into(),
        snapshot_steps: true,
        result: None,
        workflows: vec![ignis_runner::runs::WorkflowRun::default()],
    }));
    let first = run_recorded(&h, yaml, &[], record.clone(), None).await;
    assert_eq!(first.result, JobResult::Failure);
    assert_eq!(
        h.fake.stats().allocations,
        2,
        "one vm per leg, after is skipped"
    );
    let previous = record.lock().expect("record").workflows[0].clone();
    assert_eq!(previous.legs["a-0"].result, Some(JobResult::Success));
    assert_eq!(previous.legs["a-1"].result, Some(JobResult::Failure));
    assert_eq!(previous.legs["a-1"].snapshots.len(), 1);
    assert_eq!(previous.jobs["a"].result, JobResult::Failure);

    let second = run_recorded(
        &h,
        yaml,
        &[("FIXED", "yes")],
        record.clone(),
        Some(previous),
    )
    .await;
    assert_eq!(second.result, JobResult::Success);
    let started: Vec<(Option<serde_json::Value>, String)> = second
        .events
        .iter()
        .filter_map(|e| match &e.event {
            RunEvent::StepStarted {
                job_id,
                matrix,
                step_id,
                ..
            } if job_id == "a" => Some((matrix.clone(), step_id.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        [(Some(serde_json::json!({"n": 2})), "check".to_string())],
        "leg 1 kept, leg 2 continues at check"
    );
    let lines = second.lines();
    assert!(lines.iter().any(|l| l == "check 2 v2 out2"), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("kept from run r1")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l == "after"), "{lines:?}");
    // leg 2 restored + `after`: two more sessions, leg 1 none.
    assert_eq!(h.fake.stats().allocations, 4);
    assert_eq!(h.fake.stats().live, 0);
}

/// A value masked with `::add-mask::` is never recorded, so a snapshot taken after it was
/// added is not resumed from (the resumed run could not mask it): the job starts over and
/// the notice says why.
#[tokio::test]
async fn resume_never_continues_past_an_added_mask() {
    let Some(h) = harness() else { return };
    let yaml = "on: push\njobs:\n  a:\n    runs-on: ubuntu-latest\n    steps:\n      - id: first\n        run: echo \"::add-mask::generated-token-123\"\n      - id: check\n        run: test \"${{ vars.FIXED }}\" = yes\n";
    let record = Arc::new(std::sync::Mutex::new(ignis_runner::runs::RunRecord {
        version: ignis_runner::runs::RECORD_VERSION,
        run_id: "r1".into(),
        attempt: 1,
        created_unix_ms: 0,
        updated_unix_ms: 0,
        pid: std::process::id(),
        repo_dir: h.repo.path().to_path_buf(),
        event_name: "push".into(),
        event: serde_json::json!({}),
        only_job: None,
        inputs: vec![],
        vars: BTreeMap::new(),
        env: Default::default(),
        secret_names: vec![],
        matrix_filter: vec![],
        actor: None,
        backend: Backend::Fake,
        isolation: "job".into(),
        snapshot_steps: true,
        result: None,
        workflows: vec![ignis_runner::runs::WorkflowRun::default()],
    }));
    let first = run_recorded(&h, yaml, &[], record.clone(), None).await;
    assert_eq!(first.result, JobResult::Failure);
    let previous = record.lock().expect("record").workflows[0].clone();
    let snap = &previous.legs["a-0"].snapshots[0];
    assert!(
        snap.blocked
            .as_deref()
            .is_some_and(|b| b.contains("add-mask")),
        "{snap:?}"
    );
    let second = run_recorded(&h, yaml, &[("FIXED", "yes")], record, Some(previous)).await;
    assert_eq!(second.result, JobResult::Success);
    let lines = second.lines();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("starts again from its first step") && l.contains("add-mask")),
        "{lines:?}"
    );
}
