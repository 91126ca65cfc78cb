//! The requests the CRI layer turns into streaming URLs, and their validation.

use crate::error::RequestError;

/// An Exec to be served: run `cmd` in a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The container.
    pub container_id: String,
    /// The command and its arguments.
    pub cmd: Vec<String>,
    /// Run the command on a terminal.
    pub tty: bool,
    /// Stream stdin from the client.
    pub stdin: bool,
    /// Stream stdout to the client.
    pub stdout: bool,
    /// Stream stderr to the client.
    pub stderr: bool,
}

/// An Attach to be served: connect to a running container's own stdio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    /// The container.
    pub container_id: String,
    /// The container runs on a terminal.
    pub tty: bool,
    /// Stream stdin from the client.
    pub stdin: bool,
    /// Stream stdout to the client.
    pub stdout: bool,
    /// Stream stderr to the client.
    pub stderr: bool,
}

/// A PortForward to be served: connect to ports inside a pod's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortForwardRequest {
    /// The pod sandbox.
    pub pod_id: String,
    /// Ports named in the CRI request (used by WebSocket clients that name none in the URL).
    pub ports: Vec<i32>,
}

fn check_streams(stdin: bool, stdout: bool, stderr: bool, tty: bool) -> Result<(), RequestError> {
    if !(stdin || stdout || stderr) {
        return Err(RequestError::NoStreams);
    }
    if tty && stderr {
        return Err(RequestError::TtyWithStderr);
    }
    Ok(())
}

impl ExecRequest {
    /// Checks what the streaming layer needs (the CRI layer checks the container exists).
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.container_id.is_empty() {
            return Err(RequestError::EmptyContainerId);
        }
        if self.cmd.is_empty() {
            return Err(RequestError::EmptyCommand);
        }
        check_streams(self.stdin, self.stdout, self.stderr, self.tty)
    }
}

impl AttachRequest {
    /// Checks what the streaming layer needs (the CRI layer checks the container runs).
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.container_id.is_empty() {
            return Err(RequestError::EmptyContainerId);
        }
        check_streams(self.stdin, self.stdout, self.stderr, self.tty)
    }
}

impl PortForwardRequest {
    /// Checks the pod id and that every port is in 1..=65535.
    pub fn validate(&self) -> Result<(), RequestError> {
        if self.pod_id.is_empty() {
            return Err(RequestError::EmptyPodId);
        }
        match self.ports.iter().find(|p| !(1..=65535).contains(*p)) {
            Some(p) => Err(RequestError::InvalidPort(*p)),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec() -> ExecRequest {
        ExecRequest {
            container_id: "c".into(),
            cmd: vec!["true".into()],
            tty: false,
            stdin: false,
            stdout: true,
            stderr: false,
        }
    }

    #[test]
    fn validation_rejects_what_the_streaming_layer_cannot_serve() {
        assert_eq!(exec().validate(), Ok(()));
        let none = ExecRequest {
            stdout: false,
            ..exec()
        };
        assert_eq!(none.validate(), Err(RequestError::NoStreams));
        let both = ExecRequest {
            tty: true,
            stderr: true,
            ..exec()
        };
        assert_eq!(both.validate(), Err(RequestError::TtyWithStderr));
        assert!(both.validate().unwrap_err().is_invalid_argument());
        let nocmd = ExecRequest {
            cmd: vec![],
            ..exec()
        };
        assert_eq!(nocmd.validate(), Err(RequestError::EmptyCommand));
        let pf = PortForwardRequest {
            pod_id: "p".into(),
            ports: vec![80, 0],
        };
        assert_eq!(pf.validate(), Err(RequestError::InvalidPort(0)));
    }
}
