//! `edgeplane-worker`: the built-in CPU inference worker.
//!
//! Serves the Open Inference Protocol (KServe v2 gRPC, [`edgeplane_proto::oip`]) and runs real
//! ResNet18, ResNet50 and VGG16 forward passes on the CPU ([`nets`], on the kernels of [`engine`]). Weights come
//! from a safetensors file per model when given, otherwise from a seed: the arithmetic is real
//! either way (see [`nets`]). The edge agent starts one per CPU partition, or connects to one.
// One `unsafe` block: the GEMM call in `engine` (its bounds are asserted right before it).
#![deny(unsafe_code)]

pub mod engine;
pub mod nets;
pub mod onnx;
pub mod repo;
pub mod server;
