//! `BackendKind`: the one list of backends, by name, that the facade's `create_backend`, the
//! command line's `--backend`, a spec's `backend` key and the records (`Summary::backend`,
//! `operation.toml`) share.

use std::fmt;
use std::str::FromStr;

/// A backend, whether or not this build has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BackendKind {
    /// One process after another: the reference.
    Serial,
    /// Every core of one machine (rayon).
    Local,
    /// A cluster: dynamic master-worker over MPI.
    Mpi,
}

impl BackendKind {
    /// Every backend, in the order the docs list them.
    pub const ALL: [BackendKind; 3] = [BackendKind::Serial, BackendKind::Local, BackendKind::Mpi];

    /// Its name: `serial`, `local` or `mpi`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Serial => "serial",
            BackendKind::Local => "local",
            BackendKind::Mpi => "mpi",
        }
    }

    /// The names of all, joined for a message: `serial, local, mpi`.
    pub fn names() -> String {
        BackendKind::ALL.map(BackendKind::as_str).join(", ")
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is no backend's; the message lists those there are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("there is no backend called `{0}`: choose one of serial, local, mpi")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        BackendKind::ALL.into_iter().find(|k| k.as_str() == name).ok_or_else(|| UnknownBackend(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_an_unknown_one_lists_the_others() {
        for kind in BackendKind::ALL {
            assert_eq!(kind.as_str().parse::<BackendKind>(), Ok(kind));
        }
        let err = "gpu".parse::<BackendKind>().unwrap_err().to_string();
        assert_eq!(err, format!("there is no backend called `gpu`: choose one of {}", BackendKind::names()));
    }
}
