//! A look at a component before it is compiled: its size and the shape of
//! its core modules (functions, code, data, memories), read with the same
//! `wasmparser` wasmtime uses. Compiling is the expensive step (a file of a
//! million empty functions takes minutes and gigabytes); refusing such a
//! file here takes milliseconds.

use wasmtime::wasmparser::{Parser, Payload};

use super::{Limits, PluginError};

/// What a component holds, summed over all its core modules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Shape {
    /// Functions defined (not imported).
    pub(crate) functions: u64,
    /// Bytes of function bodies.
    pub(crate) code_bytes: u64,
    /// The largest function body, in bytes.
    pub(crate) largest_body: u64,
    /// Bytes of data segments.
    pub(crate) data_bytes: u64,
    /// Memories declared.
    pub(crate) memories: u64,
    /// Core modules embedded.
    pub(crate) modules: u64,
}

/// Reads the shape of `bytes` without compiling it.
pub(crate) fn shape(bytes: &[u8]) -> Result<Shape, PluginError> {
    let mut shape = Shape::default();
    for payload in Parser::new(0).parse_all(bytes) {
        let payload = payload.map_err(|e| PluginError::Compile(e.to_string()))?;
        match payload {
            Payload::FunctionSection(s) => shape.functions += u64::from(s.count()),
            Payload::CodeSectionStart { size, .. } => shape.code_bytes += u64::from(size),
            Payload::CodeSectionEntry(body) => {
                let len = body.range().len() as u64;
                shape.largest_body = shape.largest_body.max(len);
            }
            Payload::DataSection(s) => {
                for data in s {
                    let data = data.map_err(|e| PluginError::Compile(e.to_string()))?;
                    shape.data_bytes += data.data.len() as u64;
                }
            }
            Payload::MemorySection(s) => shape.memories += u64::from(s.count()),
            Payload::ModuleSection { .. } => shape.modules += 1,
            _ => {}
        }
    }
    Ok(shape)
}

/// Refuses a component over any of the limits' size and shape caps.
pub(crate) fn check(bytes: &[u8], limits: &Limits) -> Result<Shape, PluginError> {
    let too_big = |what: String| PluginError::TooBig(what);
    if bytes.len() > limits.component_bytes {
        return Err(too_big(format!(
            "{} bytes, over the {} byte limit for a component",
            bytes.len(),
            limits.component_bytes
        )));
    }
    let shape = shape(bytes)?;
    let caps = [
        (shape.functions, limits.functions as u64, "functions"),
        (shape.code_bytes, limits.code_bytes as u64, "bytes of code"),
        (
            shape.largest_body,
            limits.function_body_bytes as u64,
            "bytes in one function body",
        ),
        (shape.data_bytes, limits.data_bytes as u64, "bytes of data"),
        (
            shape.memories,
            u64::from(limits.memories_per_component),
            "memories",
        ),
        (
            shape.modules,
            u64::from(limits.core_instances_per_component),
            "core modules",
        ),
    ];
    for (has, cap, what) in caps {
        if has > cap {
            return Err(too_big(format!("{has} {what}, over the limit of {cap}")));
        }
    }
    Ok(shape)
}
