//! Integration tests of the GPU share model against hand-derived numbers from configs/gpu.
mod model;
