//! ONNX models, run on the worker's kernels ([`crate::engine`]).
//!
//! The protobuf subset of `onnx.proto` a CNN needs is declared here with prost (field numbers
//! as in the ONNX spec). [`OnnxNet::load`] reads a `model.onnx`, checks every node's operator
//! and attributes against what the engine runs, and turns the graph into a list of steps with
//! their weights flattened once (`Conv` + `BatchNormalization` become one convolution with the
//! BN folded in); anything else is refused naming the node and the operator.
//!
//! Operators: Conv (group 1, dilation 1, symmetric pads), BatchNormalization, Relu, Add,
//! MaxPool, GlobalAveragePool, AveragePool (as adaptive 1x1 output only when kernel = input),
//! Flatten (axis 1), Gemm (alpha = beta = 1), Dropout and Identity (pass-through).

use crate::engine::{self, Act, Conv2d, Epilogue};
use crate::nets::{NetError, Stop};
use prost::Message;
use std::collections::HashMap;

#[derive(Clone, PartialEq, prost::Message)]
pub struct ModelProto {
    #[prost(int64, tag = "1")]
    pub ir_version: i64,
    #[prost(message, optional, tag = "7")]
    pub graph: Option<GraphProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    pub node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(message, repeated, tag = "5")]
    pub initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    pub input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    pub output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    pub input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    pub output: Vec<String>,
    #[prost(string, tag = "3")]
    pub name: String,
    #[prost(string, tag = "4")]
    pub op_type: String,
    #[prost(message, repeated, tag = "5")]
    pub attribute: Vec<AttributeProto>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AttributeProto {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(float, tag = "2")]
    pub f: f32,
    #[prost(int64, tag = "3")]
    pub i: i64,
    #[prost(int64, repeated, tag = "8")]
    pub ints: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    pub dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    pub data_type: i32,
    #[prost(float, repeated, tag = "4")]
    pub float_data: Vec<f32>,
    #[prost(string, tag = "8")]
    pub name: String,
    #[prost(bytes = "vec", tag = "9")]
    pub raw_data: Vec<u8>,
    #[prost(int32, tag = "14")]
    pub data_location: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ValueInfoProto {
    #[prost(string, tag = "1")]
    pub name: String,
}

/// Why an ONNX file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    #[error("{path}: {why}")]
    File { path: String, why: String },
    #[error("node {node:?}: operator {op:?} is not supported by this worker (supported: Conv, BatchNormalization, Relu, Add, MaxPool, GlobalAveragePool, Flatten, Gemm, Dropout, Identity)")]
    UnknownOperator { node: String, op: String },
    #[error("node {node:?} ({op}): {why}")]
    Node {
        node: String,
        op: String,
        why: String,
    },
}

/// A value between steps.
enum Val {
    Map(Act),
    /// `[B, F]` row-major (after Flatten / Gemm).
    Flat {
        b: usize,
        data: Vec<f32>,
    },
}

/// One executable step; inputs and output are value slots.
enum Step {
    Conv {
        conv: Conv2d,
        x: usize,
        out: usize,
    },
    Relu {
        x: usize,
        out: usize,
    },
    Add {
        a: usize,
        b: usize,
        out: usize,
    },
    MaxPool {
        k: usize,
        s: usize,
        p: usize,
        x: usize,
        out: usize,
    },
    GlobalAvg {
        x: usize,
        out: usize,
    },
    Flatten {
        x: usize,
        out: usize,
    },
    Gemm {
        fc: engine::Linear,
        x: usize,
        out: usize,
    },
    Copy {
        x: usize,
        out: usize,
    },
}

/// A loaded ONNX graph.
pub struct OnnxNet {
    steps: Vec<Step>,
    input: usize,
    output: usize,
    slots: usize,
    pub input_name: String,
    pub output_name: String,
    /// Channels of the input (from the first convolution).
    pub channels: usize,
}

fn attr<'a>(n: &'a NodeProto, name: &str) -> Option<&'a AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

fn node_err(n: &NodeProto, why: impl Into<String>) -> OnnxError {
    OnnxError::Node {
        node: n.name.clone(),
        op: n.op_type.clone(),
        why: why.into(),
    }
}

/// An initializer as f32 values with its dims.
struct Init {
    dims: Vec<usize>,
    data: Vec<f32>,
}

fn init_of(t: &TensorProto) -> Result<Init, String> {
    if t.data_location == 1 {
        return Err(
            "external data is not supported (save the model with the weights inside)".into(),
        );
    }
    if t.data_type != 1 {
        return Err(format!(
            "data_type {} (only FLOAT = 1 is supported)",
            t.data_type
        ));
    }
    let data = if !t.raw_data.is_empty() {
        t.raw_data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    } else {
        t.float_data.clone()
    };
    let dims: Vec<usize> = t.dims.iter().map(|&d| d as usize).collect();
    if dims.iter().product::<usize>() != data.len() {
        return Err(format!("{} values for dims {dims:?}", data.len()));
    }
    Ok(Init { dims, data })
}

/// Builds the steps, giving every ONNX value name a slot.
struct Builder<'a> {
    inits: HashMap<&'a str, Init>,
    slots: HashMap<String, usize>,
    steps: Vec<Step>,
    channels: Option<usize>,
}

impl<'a> Builder<'a> {
    fn slot(&mut self, name: &str) -> usize {
        let n = self.slots.len();
        *self.slots.entry(name.to_string()).or_insert(n)
    }

    fn input(&mut self, n: &NodeProto, i: usize) -> Result<usize, OnnxError> {
        let name = n
            .input
            .get(i)
            .ok_or_else(|| node_err(n, format!("missing input {i}")))?;
        self.slots.get(name.as_str()).copied().ok_or_else(|| {
            node_err(
                n,
                format!("input {name:?} is not produced before this node"),
            )
        })
    }

    fn weight(&self, n: &NodeProto, i: usize) -> Result<&Init, OnnxError> {
        let name = n.input.get(i).map(String::as_str).unwrap_or("");
        self.inits
            .get(name)
            .ok_or_else(|| node_err(n, format!("input {i} ({name:?}) must be an initializer")))
    }

    fn conv(&mut self, n: &NodeProto) -> Result<Step, OnnxError> {
        let ints = |a: &str| attr(n, a).map(|a| a.ints.clone()).unwrap_or_default();
        if attr(n, "group").is_some_and(|g| g.i != 1) {
            return Err(node_err(n, "group != 1 is not supported"));
        }
        if ints("dilations").iter().any(|&d| d != 1) {
            return Err(node_err(n, "dilations != 1 are not supported"));
        }
        let pads = ints("pads");
        if pads.iter().any(|&p| p != pads[0]) {
            return Err(node_err(
                n,
                format!("asymmetric pads {pads:?} are not supported"),
            ));
        }
        let strides = ints("strides");
        if strides.len() == 2 && strides[0] != strides[1] {
            return Err(node_err(n, format!("unequal strides {strides:?}")));
        }
        let w = self.weight(n, 1)?;
        let [cout, cin, kh, kw] = w.dims[..] else {
            return Err(node_err(n, format!("weight dims {:?}, expected 4", w.dims)));
        };
        if kh != kw {
            return Err(node_err(n, "non-square kernels are not supported"));
        }
        let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self.weight(n, 2)?.data.clone(),
            None => vec![0.0; cout],
        };
        let conv = Conv2d::new(
            (cin, cout, kh),
            strides.first().map_or(1, |&s| s as usize),
            pads.first().map_or(0, |&p| p as usize),
            w.data.clone(),
            bias,
        );
        self.channels.get_or_insert(cin);
        let x = self.input(n, 0)?;
        Ok(Step::Conv { conv, x, out: 0 })
    }

    /// Fold `BatchNormalization` into the convolution that produced its input.
    fn batch_norm(&mut self, n: &NodeProto) -> Result<(), OnnxError> {
        let x = self.input(n, 0)?;
        let eps = attr(n, "epsilon").map_or(1e-5, |a| a.f);
        let p: Vec<Vec<f32>> = (1..5)
            .map(|i| self.weight(n, i).map(|w| w.data.clone()))
            .collect::<Result<_, _>>()?;
        match self.steps.last_mut() {
            Some(Step::Conv { conv, out, .. }) if *out == x => {
                conv.fold_affine(|c| {
                    let s = p[0][c] / (p[3][c] + eps).sqrt();
                    (s, p[1][c] - p[2][c] * s)
                });
                Ok(())
            }
            _ => Err(node_err(
                n,
                "BatchNormalization must directly follow the Conv that produces its input",
            )),
        }
    }

    fn gemm(&mut self, n: &NodeProto) -> Result<Step, OnnxError> {
        let geti = |a: &str| attr(n, a).map_or(0, |a| a.i);
        let getf = |a: &str| attr(n, a).map_or(1.0, |a| a.f);
        if geti("transA") != 0 || getf("alpha") != 1.0 || getf("beta") != 1.0 {
            return Err(node_err(
                n,
                "only transA = 0, alpha = beta = 1 are supported",
            ));
        }
        let w = self.weight(n, 1)?;
        let [a, b] = w.dims[..] else {
            return Err(node_err(n, format!("weight dims {:?}, expected 2", w.dims)));
        };
        // Linear wants (out, in); transB = 0 stores (in, out).
        let (inp, out, wt) = if geti("transB") == 1 {
            (b, a, w.data.clone())
        } else {
            let mut t = vec![0f32; a * b];
            for i in 0..a {
                for o in 0..b {
                    t[o * a + i] = w.data[i * b + o];
                }
            }
            (a, b, t)
        };
        let bias = match n.input.get(2).filter(|s| !s.is_empty()) {
            Some(_) => self.weight(n, 2)?.data.clone(),
            None => vec![0.0; out],
        };
        if bias.len() != out {
            return Err(node_err(
                n,
                format!("bias of {} values, expected {out}", bias.len()),
            ));
        }
        let x = self.input(n, 0)?;
        Ok(Step::Gemm {
            fc: engine::Linear::new(inp, out, wt, bias),
            x,
            out: 0,
        })
    }

    fn pool(&mut self, n: &NodeProto) -> Result<Step, OnnxError> {
        let ints = |a: &str| attr(n, a).map(|a| a.ints.clone()).unwrap_or_default();
        let (k, s, pads) = (ints("kernel_shape"), ints("strides"), ints("pads"));
        let sym = |v: &[i64]| v.iter().all(|&x| x == v[0]);
        if k.len() != 2
            || !sym(&k)
            || (!s.is_empty() && !sym(&s))
            || (!pads.is_empty() && !sym(&pads))
        {
            return Err(node_err(
                n,
                "only square kernels, equal strides and symmetric pads are supported",
            ));
        }
        if attr(n, "ceil_mode").is_some_and(|a| a.i != 0) {
            return Err(node_err(n, "ceil_mode = 1 is not supported"));
        }
        let x = self.input(n, 0)?;
        Ok(Step::MaxPool {
            k: k[0] as usize,
            s: s.first().map_or(1, |&v| v as usize),
            p: pads.first().map_or(0, |&v| v as usize),
            x,
            out: 0,
        })
    }

    fn node(&mut self, n: &NodeProto) -> Result<(), OnnxError> {
        let step = match n.op_type.as_str() {
            "Conv" => self.conv(n)?,
            "BatchNormalization" => {
                self.batch_norm(n)?;
                // The folded conv now produces this node's output.
                let out = self.slot(&n.output[0]);
                if let Some(Step::Conv { out: o, .. }) = self.steps.last_mut() {
                    *o = out;
                }
                return Ok(());
            }
            "Relu" => Step::Relu {
                x: self.input(n, 0)?,
                out: 0,
            },
            "Add" => Step::Add {
                a: self.input(n, 0)?,
                b: self.input(n, 1)?,
                out: 0,
            },
            "MaxPool" => self.pool(n)?,
            "GlobalAveragePool" => Step::GlobalAvg {
                x: self.input(n, 0)?,
                out: 0,
            },
            "Flatten" => {
                if attr(n, "axis").is_some_and(|a| a.i != 1) {
                    return Err(node_err(n, "only axis = 1 is supported"));
                }
                Step::Flatten {
                    x: self.input(n, 0)?,
                    out: 0,
                }
            }
            "Gemm" => self.gemm(n)?,
            "Dropout" | "Identity" => Step::Copy {
                x: self.input(n, 0)?,
                out: 0,
            },
            op => {
                return Err(OnnxError::UnknownOperator {
                    node: n.name.clone(),
                    op: op.into(),
                })
            }
        };
        let out_name = n
            .output
            .first()
            .ok_or_else(|| node_err(n, "no output"))?
            .clone();
        let o = self.slot(&out_name);
        let mut step = step;
        match &mut step {
            Step::Conv { out, .. }
            | Step::Relu { out, .. }
            | Step::Add { out, .. }
            | Step::MaxPool { out, .. }
            | Step::GlobalAvg { out, .. }
            | Step::Flatten { out, .. }
            | Step::Gemm { out, .. }
            | Step::Copy { out, .. } => *out = o,
        }
        self.steps.push(step);
        Ok(())
    }
}

impl OnnxNet {
    pub fn load(path: &std::path::Path) -> Result<OnnxNet, OnnxError> {
        let ferr = |why: String| OnnxError::File {
            path: path.display().to_string(),
            why,
        };
        let bytes = std::fs::read(path).map_err(|e| ferr(e.to_string()))?;
        let m = ModelProto::decode(bytes.as_slice())
            .map_err(|e| ferr(format!("not an ONNX model: {e}")))?;
        let g = m.graph.ok_or_else(|| ferr("no graph".into()))?;
        let mut inits = HashMap::new();
        for t in &g.initializer {
            let i = init_of(t).map_err(|w| ferr(format!("initializer {:?}: {w}", t.name)))?;
            inits.insert(t.name.as_str(), i);
        }
        let input_name = g
            .input
            .iter()
            .map(|v| v.name.clone())
            .find(|n| !inits.contains_key(n.as_str()))
            .ok_or_else(|| ferr("the graph has no (non-initializer) input".into()))?;
        let output_name = g
            .output
            .first()
            .ok_or_else(|| ferr("the graph has no output".into()))?
            .name
            .clone();
        let mut b = Builder {
            inits,
            slots: HashMap::new(),
            steps: Vec::new(),
            channels: None,
        };
        let input = b.slot(&input_name);
        for n in &g.node {
            b.node(n)?;
        }
        let output = *b
            .slots
            .get(&output_name)
            .ok_or_else(|| ferr(format!("output {output_name:?} is produced by no node")))?;
        Ok(OnnxNet {
            steps: b.steps,
            input,
            output,
            slots: b.slots.len(),
            input_name,
            output_name,
            channels: b.channels.unwrap_or(3),
        })
    }

    /// Steps of one pass (where a [`Stop`] is asked).
    pub fn layers(&self) -> usize {
        self.steps.len()
    }

    /// Forward pass of `batch` NCHW images `channels x h x w`; returns the output `[B, F]`.
    pub fn forward(
        &self,
        x: &[f32],
        batch: usize,
        (h, w): (usize, usize),
        stop: &dyn Stop,
    ) -> Result<Vec<f32>, NetError> {
        let mut vals: Vec<Option<Val>> = (0..self.slots).map(|_| None).collect();
        vals[self.input] = Some(Val::Map(Act::from_nchw(batch, self.channels, h, w, x)));
        let total = self.steps.len();
        for (done, s) in self.steps.iter().enumerate() {
            if stop.stop() {
                return Err(NetError::Cancelled { done, total });
            }
            let (out, v) = step(s, &vals)?;
            vals[out] = Some(v);
        }
        match vals[self.output].take() {
            Some(Val::Flat { data, .. }) => Ok(data),
            Some(Val::Map(a)) => Ok(a.data),
            None => Err(NetError::Graph("the output was never computed".into())),
        }
    }
}

fn map(vals: &[Option<Val>], i: usize) -> Result<&Act, NetError> {
    match &vals[i] {
        Some(Val::Map(a)) => Ok(a),
        _ => Err(NetError::Graph("an operator expected a 4-D tensor".into())),
    }
}

fn step(s: &Step, vals: &[Option<Val>]) -> Result<(usize, Val), NetError> {
    const PLAIN: Epilogue<'static> = Epilogue {
        residual: None,
        relu: false,
    };
    Ok(match s {
        Step::Conv { conv, x, out } => (*out, Val::Map(conv.forward(map(vals, *x)?, PLAIN))),
        Step::Relu { x, out } => {
            let mut v = match &vals[*x] {
                Some(Val::Map(a)) => Val::Map(a.clone()),
                Some(Val::Flat { b, data }) => Val::Flat {
                    b: *b,
                    data: data.clone(),
                },
                None => return Err(NetError::Graph("Relu of an unset value".into())),
            };
            match &mut v {
                Val::Map(a) => engine::relu(&mut a.data),
                Val::Flat { data, .. } => engine::relu(data),
            }
            (*out, v)
        }
        Step::Add { a, b, out } => {
            let (a, b) = (map(vals, *a)?, map(vals, *b)?);
            if (a.c, a.b, a.h, a.w) != (b.c, b.b, b.h, b.w) {
                return Err(NetError::Graph("Add of two different shapes".into()));
            }
            let mut y = a.clone();
            y.data.iter_mut().zip(&b.data).for_each(|(u, v)| *u += v);
            (*out, Val::Map(y))
        }
        Step::MaxPool { k, s, p, x, out } => {
            (*out, Val::Map(engine::max_pool(map(vals, *x)?, *k, *s, *p)))
        }
        Step::GlobalAvg { x, out } => {
            let a = map(vals, *x)?;
            let data = engine::adaptive_avg_flat(a, 1);
            // [B, C] row-major back to CBHW with H = W = 1.
            let mut t = vec![0f32; data.len()];
            for bi in 0..a.b {
                for ci in 0..a.c {
                    t[ci * a.b + bi] = data[bi * a.c + ci];
                }
            }
            (
                *out,
                Val::Map(Act {
                    c: a.c,
                    b: a.b,
                    h: 1,
                    w: 1,
                    data: t,
                }),
            )
        }
        Step::Flatten { x, out } => {
            let a = map(vals, *x)?;
            let f = a.c * a.h * a.w;
            // torch order per image: (c, y, x).
            let mut data = vec![0f32; a.b * f];
            let hw = a.h * a.w;
            for ci in 0..a.c {
                for bi in 0..a.b {
                    data[bi * f + ci * hw..][..hw]
                        .copy_from_slice(&a.data[(ci * a.b + bi) * hw..][..hw]);
                }
            }
            (*out, Val::Flat { b: a.b, data })
        }
        Step::Gemm { fc, x, out } => match &vals[*x] {
            Some(Val::Flat { b, data }) if data.len() == b * fc.inp => (
                *out,
                Val::Flat {
                    b: *b,
                    data: fc.forward(data, false),
                },
            ),
            _ => return Err(NetError::Graph(format!("Gemm expected [B, {}]", fc.inp))),
        },
        Step::Copy { x, out } => (
            *out,
            match &vals[*x] {
                Some(Val::Map(a)) => Val::Map(a.clone()),
                Some(Val::Flat { b, data }) => Val::Flat {
                    b: *b,
                    data: data.clone(),
                },
                None => return Err(NetError::Graph("Identity of an unset value".into())),
            },
        ),
    })
}
