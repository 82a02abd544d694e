//! The node source: the kernel's facts about how pods are wired (links,
//! routes, neighbours, forwarding entries), read over netlink at start and
//! again after every burst of changes, sent whole as
//! [`Input::NodeFacts`]. A pod whose interface appears after its API
//! object is enforced as soon as the kernel announces the interface.

use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use tracing::warn;

use crate::agent::NODE_SCOPE;
use crate::input::Input;
use crate::netlink::{self, NetlinkError};

/// Changes closer together than this are read once.
const SETTLE: Duration = Duration::from_millis(20);

enum Kick {
    Changed,
    Failed(String),
    Stop,
}

/// The running source; dropping it stops it (the agent's loop ends when
/// every source has stopped).
pub struct NodeSource {
    kick: Sender<Kick>,
}

impl Drop for NodeSource {
    fn drop(&mut self) {
        let _ = self.kick.send(Kick::Stop);
    }
}

/// Starts the source in `netns` (or the agent's own namespace). The first
/// facts are sent before this returns; the watch is subscribed before the
/// first read, so no change after it is missed.
pub fn spawn(netns: Option<String>, tx: Sender<Input>) -> Result<NodeSource, NetlinkError> {
    // The watch thread holds no sender of the agent's: only this source's
    // own thread does, so stopping it lets the agent's loop end.
    let (kick, kicked) = channel::<Kick>();
    let failed_kick = kick.clone();
    let watch_kick = kick.clone();
    netlink::watch(
        netns.as_deref(),
        move || watch_kick.send(Kick::Changed).is_ok(),
        move |e| {
            let _ = failed_kick.send(Kick::Failed(e.to_string()));
        },
    )?;
    let first = netlink::read(netns.as_deref())?;
    let source = NodeSource { kick };
    if tx.send(Input::NodeFacts(first)).is_err() {
        return Ok(source);
    }
    std::thread::Builder::new()
        .name("node-facts".into())
        .spawn(move || {
            loop {
                match kicked.recv() {
                    Ok(Kick::Changed) => {}
                    Ok(Kick::Failed(e)) => {
                        let _ = tx.send(Input::SourceDown {
                            scope: NODE_SCOPE.into(),
                            reason: format!("the node's netlink watch stopped: {e}"),
                        });
                        return;
                    }
                    Ok(Kick::Stop) | Err(_) => return,
                }
                // Drain the burst.
                loop {
                    match kicked.recv_timeout(SETTLE) {
                        Ok(Kick::Changed) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Ok(Kick::Stop | Kick::Failed(_)) | Err(RecvTimeoutError::Disconnected) => {
                            return
                        }
                    }
                }
                let input = match netlink::read(netns.as_deref()) {
                    Ok(f) => Input::NodeFacts(f),
                    Err(e) => {
                        warn!("cannot read the node's wiring: {e}");
                        Input::SourceDown {
                            scope: NODE_SCOPE.into(),
                            reason: format!("cannot read the node's wiring: {e}"),
                        }
                    }
                };
                if tx.send(input).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| NetlinkError::Io {
            what: "starting the node source".into(),
            error: e,
        })?;
    Ok(source)
}
