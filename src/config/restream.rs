//! `[restream]`: pushing live channels to the owner's destinations (`actors::restream`).

use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::units::duration_str;
use crate::actors::restream::RestreamSettings;
use crate::error::{Error, ErrorKind, Result};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestreamConfig {
    /// Most destinations one channel may have; each is one outgoing copy of the stream.
    pub max_destinations_per_channel: usize,
    /// TCP/SRT connect plus RTMP handshake and publish must finish within this.
    #[serde(with = "duration_str")]
    pub connect_timeout: Duration,
    /// First retry delay after a failed push; doubles per failure up to `retry_max`.
    #[serde(with = "duration_str")]
    pub retry_initial: Duration,
    /// Longest delay between retries of a failing destination.
    #[serde(with = "duration_str")]
    pub retry_max: Duration,
    /// A write to a destination that takes longer than this fails the push (it is retried).
    #[serde(with = "duration_str")]
    pub write_timeout: Duration,
    /// A destination behind the newest frame by more than this skips to the newest key frame.
    #[serde(with = "duration_str")]
    pub max_lag: Duration,
    /// PEM file of extra trusted root certificates for `rtmps://` destinations (a private CA
    /// or a self-signed server), added to the public web roots. Empty: public roots only.
    pub ca_file: String,
}

impl Default for RestreamConfig {
    fn default() -> Self {
        let s = RestreamSettings::default();
        RestreamConfig {
            max_destinations_per_channel: 8,
            connect_timeout: s.connect_timeout,
            retry_initial: s.retry_initial,
            retry_max: s.retry_max,
            write_timeout: s.write_timeout,
            max_lag: s.max_lag,
            ca_file: String::new(),
        }
    }
}

impl RestreamConfig {
    /// The runtime settings, with `ca_file` loaded.
    pub fn settings(&self) -> Result<RestreamSettings> {
        let mut extra_roots = Vec::new();
        if !self.ca_file.is_empty() {
            let pem = std::fs::read(&self.ca_file).map_err(|e| {
                Error::with_source(
                    ErrorKind::FailedPrecondition,
                    format!("cannot read restream.ca_file {}", self.ca_file),
                    e,
                )
            })?;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                extra_roots.push(cert.map_err(|e| {
                    Error::with_source(
                        ErrorKind::FailedPrecondition,
                        format!("restream.ca_file {} is not valid PEM", self.ca_file),
                        e,
                    )
                })?);
            }
            if extra_roots.is_empty() {
                return Err(Error::new(
                    ErrorKind::FailedPrecondition,
                    format!("restream.ca_file {} holds no certificate", self.ca_file),
                ));
            }
        }
        Ok(RestreamSettings {
            connect_timeout: self.connect_timeout,
            retry_initial: self.retry_initial,
            retry_max: self.retry_max.max(self.retry_initial),
            write_timeout: self.write_timeout,
            max_lag: self.max_lag,
            extra_roots,
        })
    }
}
