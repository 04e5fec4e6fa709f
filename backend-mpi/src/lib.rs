//! The MPI backend (being written).
