//! Progress bars on stderr for `produce` and `gen` (indicatif), drawn only when stderr is a
//! terminal: piped or logged, nothing is written.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `total` items (`None`: a count without an end), labelled `what`; hidden when stderr
/// is not a terminal.
pub(crate) fn bar(total: Option<u64>, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = match total {
        Some(total) => ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
        None => ProgressBar::new_spinner(),
    };
    let template = match total {
        Some(_) => "{msg} {wide_bar} {human_pos}/{human_len} ({per_sec}, {eta} left)",
        None => "{msg} {spinner} {human_pos} ({per_sec})",
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar
}
