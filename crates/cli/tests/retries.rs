//! Retries by cause, as a user sets them up and sees them: a queue that retries one exit
//! code, a run that fails once with it and then finishes, told it is a retry.

mod common;

use common::{ok, refused, wait_async, ServerProcess};
use liftoff_types::{ItemId, ItemState};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_failing_with_a_retried_exit_code_runs_again_told_so_and_finishes() {
    let server = ServerProcess::start();
    let client = server.client();
    ok(&server.run(&["queue", "create", "flaky", "--retry", "exit-code=2:3"]));
    let shown = ok(&server.run(&["queue", "show", "flaky"]));
    assert!(shown.contains("exit-code 2 (3)"), "{shown}");
    assert!(shown.contains("preempted 5"), "W&B's default: {shown}");
    let dir = server.dir.path();
    let _agent = server.agent(&dir.join("agent"), &["--queue", "flaky"]);
    let (ledger, mark) = (dir.join("ledger"), dir.join("mark"));
    let script = format!(
        "echo \"$LIFTOFF_ATTEMPT ${{WANDB_RESUME:-new}}\" >> {l}; [ -e {m} ] || {{ touch {m}; exit 3; }}",
        l = ledger.display(),
        m = mark.display()
    );
    let id = ok(&server.run(&["launch", "-q", "flaky", "--", "sh", "-c", &script]));
    let item = ItemId(id.trim().parse().unwrap());
    wait_async("the item to end", Duration::from_secs(30), || async {
        client.get_item(item).await.unwrap().state.is_terminal()
    })
    .await;
    let shown = client.get_item(item).await.unwrap();
    assert_eq!(shown.state, ItemState::Finished, "{:?}", shown.failure);
    assert_eq!(
        std::fs::read_to_string(&ledger).unwrap(),
        "1 new\n2 allow\n",
        "the retry knows it is one (LIFTOFF_ATTEMPT, WANDB_RESUME)"
    );
    let text = ok(&server.run(&["show", &item.to_string()]));
    assert!(text.contains("1 (exit-code 1)"), "{text}");
    assert!(text.contains("retry 1 of 2 for exit-code"), "{text}");
    // A launch may not ask for more than its queue allows; nor may a queue be misspelt.
    let out = refused(&server.run(&[
        "launch",
        "-q",
        "flaky",
        "--retry",
        "exit-code=5",
        "--",
        "true",
    ]));
    assert!(
        out.contains("retry.exit-code.max") && out.contains("limit of 2"),
        "{out}"
    );
    let out = refused(&server.run(&["queue", "create", "bad", "--retry", "exitcode=1"]));
    assert!(out.contains("unknown cause \"exitcode\""), "{out}");
}
