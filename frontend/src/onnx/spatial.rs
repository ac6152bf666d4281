//! `Conv`, `MaxPool`, `AveragePool` and `GlobalAveragePool` to the graph
//! IR's 2-D `conv2d`, pools and `global_avg_pool`.
//!
//! ONNX pads (`[x1_begin, x2_begin, x1_end, x2_end]`) are the graph IR's
//! `[top, left, bottom, right]`; `auto_pad` is resolved from static sizes;
//! `ceil_mode` becomes extra bottom/right padding, which the graph IR's
//! pools never count; `count_include_pad` becomes a constant factor per
//! output position. A 1-D operator runs as 2-D with a height of 1 (a
//! reshape on each side); a 3-D pool as two 2-D pools. 3-D convolution is
//! refused.

use super::import::{int_list, Attributes, Importer, Result, Value};
use super::ops::only_first_output;
use super::proto::NodeProto;
use super::shapes::reshape_to;
use lopper_ir::graph::NodeIndex;
use lopper_ir::Dim;

/// Imports `node` if it is one of this module's operators.
pub(super) fn import_node(
    im: &mut Importer,
    node: &NodeProto,
) -> Option<Result<Vec<Option<Value>>>> {
    let out = node.output.first().cloned().unwrap_or_default();
    let result = match node.op_type.as_str() {
        "Conv" => conv(im, node, &out),
        "MaxPool" | "AveragePool" => pool(im, node, &out),
        "GlobalAveragePool" => im.tensor(node, 0).and_then(|x| {
            if im.ty(x).shape.rank() != 4 {
                return Err(format!(
                    "needs a 4-D (N, C, H, W) input, got {}",
                    im.ty(x).shape
                ));
            }
            im.build(&out, "global_avg_pool", vec![], &[x])
        }),
        _ => return None,
    };
    Some(result.map(|n| vec![Some(Value::Tensor(n))]))
}

/// The window geometry of one spatial dim.
struct Window {
    kernel: usize,
    stride: usize,
    dilation: usize,
    pad_begin: usize,
    pad_end: usize,
}

/// Kernel, stride, dilation and padding per spatial dim from the node's
/// attributes; `input` holds the spatial extents (for `auto_pad`).
fn windows(node: &NodeProto, kernel: &[usize], input: &[Dim]) -> Result<Vec<Window>> {
    let at = Attributes(node);
    let n = kernel.len();
    let list = |name: &str, default: usize, len: usize| -> Result<Vec<usize>> {
        match at.ints(name)? {
            None => Ok(vec![default; len]),
            Some(v) if v.len() == len => v
                .iter()
                .map(|&x| usize::try_from(x).map_err(|_| format!("`{name}` holds {x}")))
                .collect(),
            Some(v) => Err(format!(
                "`{name}` has {} values for {n} spatial dims",
                v.len()
            )),
        }
    };
    let strides = list("strides", 1, n)?;
    let dilations = list("dilations", 1, n)?;
    for (name, values) in [
        ("kernel_shape", kernel),
        ("strides", &strides[..]),
        ("dilations", &dilations[..]),
    ] {
        if values.contains(&0) {
            return Err(format!("`{name}` holds 0; it must be positive"));
        }
    }
    let pads = list("pads", 0, 2 * n)?;
    let auto_pad = at.string("auto_pad", "NOTSET")?;
    let mut out = Vec::new();
    for i in 0..n {
        let (mut pad_begin, mut pad_end) = (pads[i], pads[n + i]);
        match auto_pad.as_str() {
            "NOTSET" => {}
            "VALID" => (pad_begin, pad_end) = (0, 0),
            "SAME_UPPER" | "SAME_LOWER" => {
                let Dim::Static(extent) = input[i] else {
                    return Err(format!(
                        "`auto_pad` = {auto_pad} needs static spatial sizes"
                    ));
                };
                let span = (kernel[i] - 1) * dilations[i] + 1;
                let outputs = extent.div_ceil(strides[i].max(1));
                let total = ((outputs - 1) * strides[i] + span).saturating_sub(extent);
                let small = total / 2;
                (pad_begin, pad_end) = if auto_pad == "SAME_UPPER" {
                    (small, total - small)
                } else {
                    (total - small, small)
                };
            }
            other => return Err(format!("`auto_pad` = {other:?} is not an ONNX value")),
        }
        out.push(Window {
            kernel: kernel[i],
            stride: strides[i],
            dilation: dilations[i],
            pad_begin,
            pad_end,
        });
    }
    Ok(out)
}

/// Brings a 3-D (1-D spatial) tensor to 4-D with a height of 1; 4-D passes.
fn to_2d(im: &mut Importer, name: &str, x: NodeIndex) -> Result<NodeIndex> {
    let dims = im.ty(x).shape.0.clone();
    match dims.len() {
        4 => Ok(x),
        3 => reshape_to(
            im,
            name,
            x,
            vec![
                dims[0].clone(),
                dims[1].clone(),
                Dim::Static(1),
                dims[2].clone(),
            ],
        ),
        r => Err(format!(
            "has {} spatial dims; lopper imports 1-D and 2-D convolution and pooling",
            r.saturating_sub(2)
        )),
    }
}

/// Lists the graph-IR attributes of a window pair, with a height of 1
/// prepended for 1-D.
fn window_attrs(w: &[Window]) -> (Vec<i64>, Vec<i64>, Vec<i64>, Vec<i64>) {
    let pad_1d = w.len() == 1;
    let mut kernel = Vec::new();
    let mut stride = Vec::new();
    let mut dilation = Vec::new();
    let mut padding = vec![0; 4];
    if pad_1d {
        kernel.push(1);
        stride.push(1);
        dilation.push(1);
    }
    for (i, win) in w.iter().enumerate() {
        let d = if pad_1d { 1 } else { i };
        kernel.push(win.kernel as i64);
        stride.push(win.stride as i64);
        dilation.push(win.dilation as i64);
        padding[d] = win.pad_begin as i64;
        padding[d + 2] = win.pad_end as i64;
    }
    (kernel, stride, dilation, padding)
}

/// Undoes [`to_2d`] on a result.
fn from_2d(im: &mut Importer, out: &str, y: NodeIndex, spatial: usize) -> Result<NodeIndex> {
    if spatial == 2 {
        return Ok(y);
    }
    let d = im.ty(y).shape.0.clone();
    reshape_to(im, out, y, vec![d[0].clone(), d[1].clone(), d[3].clone()])
}

fn conv(im: &mut Importer, node: &NodeProto, out: &str) -> Result<NodeIndex> {
    let x = im.tensor(node, 0)?;
    let w = im.tensor(node, 1)?;
    let bias = im.optional_tensor(node, 2)?;
    let x_dims = im.ty(x).shape.0.clone();
    let w_dims = im.ty(w).shape.0.clone();
    let spatial = x_dims.len().saturating_sub(2);
    if w_dims.len() != x_dims.len() {
        return Err(format!(
            "weight {} and input {} differ in rank",
            im.ty(w).shape,
            im.ty(x).shape
        ));
    }
    let kernel: Vec<usize> = match Attributes(node).ints("kernel_shape")? {
        Some(k) => k.iter().map(|&v| v.max(0) as usize).collect(),
        None => w_dims[2..]
            .iter()
            .map(|d| d.as_static().ok_or("has a symbolic kernel size"))
            .collect::<std::result::Result<_, _>>()?,
    };
    let win = windows(node, &kernel, &x_dims[2..])?;
    let x2 = to_2d(im, &format!("{out}.input2d"), x)?;
    let w2 = to_2d(im, &format!("{out}.weight2d"), w)?;
    let (_, stride, dilation, padding) = window_attrs(&win);
    let attrs = vec![
        ("stride".into(), int_list(&stride)),
        ("padding".into(), int_list(&padding)),
        ("dilation".into(), int_list(&dilation)),
        (
            "groups".into(),
            lopper_ir::graph::AttrValue::Int(Attributes(node).int("group", 1)?),
        ),
    ];
    let operands: Vec<NodeIndex> = [Some(x2), Some(w2), bias].into_iter().flatten().collect();
    let name = if spatial == 2 {
        out.to_string()
    } else {
        format!("{out}.conv2d")
    };
    let y = im.build(&name, "conv2d", attrs, &operands)?;
    from_2d(im, out, y, spatial)
}

fn pool(im: &mut Importer, node: &NodeProto, out: &str) -> Result<NodeIndex> {
    only_first_output(node)?;
    let at = Attributes(node);
    let x = im.tensor(node, 0)?;
    let x_dims = im.ty(x).shape.0.clone();
    let spatial = x_dims.len().saturating_sub(2);
    let kernel: Vec<usize> = at
        .ints("kernel_shape")?
        .ok_or("needs `kernel_shape`")?
        .iter()
        .map(|&v| usize::try_from(v).map_err(|_| format!("`kernel_shape` holds {v}")))
        .collect::<Result<_>>()?;
    if kernel.len() != spatial || !(1..=3).contains(&spatial) {
        return Err(format!(
            "`kernel_shape` has {} values for input {}",
            kernel.len(),
            im.ty(x).shape
        ));
    }
    let mut win = windows(node, &kernel, &x_dims[2..])?;
    let max = node.op_type == "MaxPool";
    let count_pads = !max && at.int("count_include_pad", 0)? != 0;
    // The padded extent each window may cover before ceil_mode adds more
    // (what count_include_pad counts).
    let padded_extent: Vec<Option<usize>> = win
        .iter()
        .zip(&x_dims[2..])
        .map(|(w, d)| d.as_static().map(|n| n + w.pad_begin + w.pad_end))
        .collect();
    if at.int("ceil_mode", 0)? != 0 {
        for (w, d) in win.iter_mut().zip(&x_dims[2..]) {
            let Dim::Static(extent) = d else {
                return Err("`ceil_mode` needs static spatial sizes".into());
            };
            let padded = extent + w.pad_begin + w.pad_end;
            let span = w.span();
            if padded < span {
                continue;
            }
            let mut outputs = (padded - span).div_ceil(w.stride) + 1;
            if (outputs - 1) * w.stride >= extent + w.pad_begin {
                outputs -= 1;
            }
            w.pad_end += ((outputs - 1) * w.stride + span).saturating_sub(padded);
        }
    }
    let pooled_name = if count_pads {
        format!("{out}.excluding_pads")
    } else {
        out.to_string()
    };
    let y = match spatial {
        1 => {
            let x2 = to_2d(im, &format!("{out}.input2d"), x)?;
            let y = pool2d(
                im,
                &format!("{out}.pool2d"),
                x2,
                max,
                [&Window::whole(), &win[0]],
            )?;
            from_2d(im, &pooled_name, y, 1)?
        }
        2 => pool2d(im, &pooled_name, x, max, [&win[0], &win[1]])?,
        _ => pool3d(im, &pooled_name, x, max, &win)?,
    };
    if !count_pads || win.iter().all(|w| w.pad_begin + w.pad_end == 0) {
        return Ok(y);
    }
    // Average over the window's cells inside the padded input, from lopper's
    // average over the cells inside the input: a constant factor per output
    // position.
    let in_dims = &x_dims[2..];
    let out_dims = &im.ty(y).shape.0[2..].to_vec();
    let mut factors: Vec<Vec<f32>> = Vec::new();
    for ((w, d), (o, padded)) in win
        .iter()
        .zip(in_dims)
        .zip(out_dims.iter().zip(&padded_extent))
    {
        let (Some(n), Some(outputs), Some(padded)) = (d.as_static(), o.as_static(), *padded) else {
            return Err("`count_include_pad` needs static spatial sizes".into());
        };
        let cells = |lo: i64, hi: i64, i: usize| {
            let start = (i * w.stride) as i64 - w.pad_begin as i64;
            (0..w.kernel)
                .filter(|&j| (lo..hi).contains(&(start + (j * w.dilation) as i64)))
                .count() as f32
        };
        let lo = -(w.pad_begin as i64);
        factors.push(
            (0..outputs)
                .map(|i| cells(0, n as i64, i) / cells(lo, lo + padded as i64, i))
                .collect(),
        );
    }
    if factors.iter().map(Vec::len).product::<usize>() > 1 << 24 {
        return Err("`count_include_pad` over more than 2^24 output positions".into());
    }
    let mut scale = vec![1.0f32];
    for f in &factors {
        scale = scale
            .iter()
            .flat_map(|s| f.iter().map(move |v| s * v))
            .collect();
    }
    let shape: Vec<usize> = factors.iter().map(Vec::len).collect();
    let scale = im.param(
        &format!("{out}.pad_counts"),
        lopper_ir::Tensor { shape, data: scale },
    );
    im.add(
        out,
        lopper_ir::Op::Binary(lopper_ir::graph::BinaryOp::Mul),
        &[y, scale],
    )
}

impl Window {
    /// The cells the window spans, taps and gaps.
    fn span(&self) -> usize {
        (self.kernel - 1) * self.dilation + 1
    }

    /// A window of one cell: the dim passes through.
    fn whole() -> Window {
        Window {
            kernel: 1,
            stride: 1,
            dilation: 1,
            pad_begin: 0,
            pad_end: 0,
        }
    }
}

/// A graph-IR 2-D pool over the last two dims of a 4-D `x`.
fn pool2d(
    im: &mut Importer,
    name: &str,
    x: NodeIndex,
    max: bool,
    w: [&Window; 2],
) -> Result<NodeIndex> {
    let pair = |f: fn(&Window) -> usize| int_list(&[f(w[0]) as i64, f(w[1]) as i64]);
    let attrs = vec![
        ("kernel".into(), pair(|w| w.kernel)),
        ("stride".into(), pair(|w| w.stride)),
        ("dilation".into(), pair(|w| w.dilation)),
        (
            "padding".into(),
            int_list(
                &[w[0].pad_begin, w[1].pad_begin, w[0].pad_end, w[1].pad_end].map(|p| p as i64),
            ),
        ),
    ];
    im.build(
        name,
        if max { "max_pool2d" } else { "avg_pool2d" },
        attrs,
        &[x],
    )
}

/// A 3-D pool as two 2-D pools: over H and W with depth folded into the
/// channels, then over D with H and W folded into one dim. Exact for max,
/// and for the average too, since every depth slice of a window has the
/// same number of valid cells.
fn pool3d(
    im: &mut Importer,
    out: &str,
    x: NodeIndex,
    max: bool,
    w: &[Window],
) -> Result<NodeIndex> {
    let d = im.ty(x).shape.0.clone();
    let (Some(c), Some(depth)) = (d[1].as_static(), d[2].as_static()) else {
        return Err("3-D pooling needs static channels and depth".into());
    };
    let planes = reshape_to(
        im,
        &format!("{out}.planes"),
        x,
        vec![
            d[0].clone(),
            Dim::Static(c * depth),
            d[3].clone(),
            d[4].clone(),
        ],
    )?;
    let hw = pool2d(im, &format!("{out}.hw"), planes, max, [&w[1], &w[2]])?;
    let p = im.ty(hw).shape.0.clone();
    let (Some(h), Some(wd)) = (p[2].as_static(), p[3].as_static()) else {
        return Err("3-D pooling needs static spatial sizes".into());
    };
    let columns = reshape_to(
        im,
        &format!("{out}.columns"),
        hw,
        vec![
            d[0].clone(),
            Dim::Static(c),
            Dim::Static(depth),
            Dim::Static(h * wd),
        ],
    )?;
    let pooled = pool2d(
        im,
        &format!("{out}.depth"),
        columns,
        max,
        [&w[0], &Window::whole()],
    )?;
    let od = im.ty(pooled).shape.0[2].clone();
    reshape_to(
        im,
        out,
        pooled,
        vec![
            d[0].clone(),
            Dim::Static(c),
            od,
            Dim::Static(h),
            Dim::Static(wd),
        ],
    )
}
