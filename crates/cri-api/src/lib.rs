//! The CRI `runtime.v1` API: message types, the `RuntimeService` and `ImageService` servers and
//! clients, generated at build time from `proto/api.proto`.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The `runtime.v1` package.
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}
