//! `report.html` in a real headless browser: a run's page loads from the file system with no
//! console message, shows one timeline bar per process, and looks right in a screenshot kept
//! under `target/tmp/` (`report-page.png`) for a person to look at.
//!
//! Needs Chromium (`chromium`, or the program named by `TASKFARM_CHROMIUM`); without it the
//! test says so and passes, except with `CI=true`, where a missing browser is a failure
//! (`.ci/run` installs Debian's `chromium`).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{result_dir, text, worker_no_panic};

/// How long one browser run may take before the test gives up on it.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

/// The browser to use, or `None` (with a note, or a failure under `CI=true`).
fn chromium() -> Option<PathBuf> {
    let named = std::env::var_os("TASKFARM_CHROMIUM").map(PathBuf::from);
    let found = named.or_else(|| {
        let path = std::env::var_os("PATH")?;
        std::env::split_paths(&path)
            .flat_map(|dir| ["chromium", "chromium-browser"].map(|name| dir.join(name)))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(!ci, "CI=true but no chromium was found on the PATH: the page cannot be checked in a browser");
        println!("note: chromium was not found on the PATH: the page was not checked in a browser (test skipped)");
    }
    found
}

/// Runs headless Chromium on the page `file` with `extra` arguments and a fresh profile;
/// returns its output and the console messages it logged.
fn browse(browser: &Path, file: &Path, extra: &[&str]) -> (Output, Vec<String>) {
    let profile = tempfile::tempdir().expect("a temporary profile directory");
    let url = format!("file://{}", file.canonicalize().expect("the page exists").display());
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(&url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("chromium starts");
    // Read both pipes on threads so a full pipe never stalls the browser.
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        bytes
    });
    let err_thread = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stderr, &mut bytes);
        bytes
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for chromium") {
            break status;
        }
        if started.elapsed() > BROWSER_DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {} s on {url}", BROWSER_DEADLINE.as_secs());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let output = Output {
        status,
        stdout: out_thread.join().expect("the stdout reader"),
        stderr: err_thread.join().expect("the stderr reader"),
    };
    // Chromium logs each console message of the page as `...:CONSOLE:<line>] "<message>", source: ...`.
    let console = text(&output.stderr).lines().filter(|l| l.contains(":CONSOLE")).map(str::to_owned).collect();
    assert!(output.status.success(), "chromium failed on {url}: {}", text(&output.stderr));
    (output, console)
}

#[test]
fn the_report_page_loads_in_a_browser_with_a_bar_per_process() {
    let Some(browser) = chromium() else { return };
    let base = tempfile::tempdir().expect("a temporary directory");
    // 16 processes: x = 3 crashes with a line on stderr, x = 5 runs past its timeout.
    let spec = base.path().join("page.toml");
    std::fs::write(
        &spec,
        r#"name = "page"
kind = "command"
runs = 2
timeout = "500ms"
command = ["sh", "-c", '''if [ {x} = 3 ]; then echo "ValueError: x is 3" >&2; exit 4; fi; if [ {x} = 5 ]; then sleep 5; fi; sleep 0.0{x}; echo "{{\"y\": {x}}}"''']

[parameter_ranges]
x = [0, 1, 2, 3, 4, 5, 6, 7]
"#,
    )
    .expect("the spec is written");
    let results = base.path().join("results");
    let out = worker_no_panic(
        &["run", &spec.to_string_lossy(), "--pool-size", "4", "--results", &results.to_string_lossy(), "--quiet"],
        base.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("12 finished, 2 crashed, 2 timed out of 16"), "{}", text(&out.stdout));
    let dir = result_dir(&results, "page");
    let page = dir.join("report.html");
    assert!(page.is_file(), "consolidation writes report.html");

    // `report --html` writes it again from the journal alone.
    std::fs::remove_file(&page).expect("the page is removed");
    let out = worker_no_panic(&["report", &dir.to_string_lossy(), "--html"], base.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), page.display().to_string());
    let html = std::fs::read_to_string(&page).expect("report --html wrote the page");
    for fetched in ["src=", "href=", "@import", "url("] {
        assert!(!html.contains(fetched), "the page fetches nothing ({fetched})");
    }

    // The DOM as the browser built it: a bar per process, each with its tooltip.
    let (dom, console) = browse(&browser, &page, &["--dump-dom"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let dom = text(&dom.stdout);
    assert_eq!(dom.matches("<rect class=\"bar ").count(), 16, "one bar per process");
    assert_eq!(dom.matches("<rect class=\"bar crashed\"").count(), 2);
    assert_eq!(dom.matches("<rect class=\"bar timed_out\"").count(), 2);
    assert!(dom.contains("<title>#6 · x=3 · "), "a crashed bar's tooltip names its id and parameters");
    assert!(dom.contains("· crashed · "), "and its status");
    assert!(dom.contains("ValueError: x is 3"), "the crash group shows the stderr line");
    let two = dom.find(">thread-2</text>").expect("thread-2's lane");
    let three = dom.find(">thread-3</text>").expect("thread-3's lane");
    assert!(two < three, "lanes in order");

    // A screenshot for a person to look at.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report-page.png");
    let _ = std::fs::remove_file(&shot);
    let (_, console) =
        browse(&browser, &page, &[&format!("--screenshot={}", shot.display()), "--window-size=1400,1000"]);
    assert!(console.is_empty(), "console messages: {console:#?}");
    let png = std::fs::read(&shot).expect("the screenshot was written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    let size = |at: usize| u32::from_be_bytes([png[at], png[at + 1], png[at + 2], png[at + 3]]);
    assert_eq!((size(16), size(20)), (1400, 1000), "the window's size");
    println!("screenshot of the report page: {}", shot.display());
}

#[test]
fn the_console_check_sees_a_page_that_fails() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let page = dir.path().join("broken.html");
    std::fs::write(&page, "<!DOCTYPE html><html><body><script>undefinedFunction();</script></body></html>")
        .expect("the page is written");
    let (_, console) = browse(&browser, &page, &["--dump-dom"]);
    assert!(console.iter().any(|l| l.contains("undefinedFunction")), "{console:#?}");
}
