//! The Edgeplane scheduling core: pure, synchronous, no I/O beyond parsing the data it is given.
#![forbid(unsafe_code)]
