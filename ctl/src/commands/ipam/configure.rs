//! `ipam configure`: changes the `IPAMConfiguration` named `default`
//! (created when missing), validated, as a compare-and-swap.

use crate::cli::IpamConfigureArgs;
use crate::client::{ApiClient, api_error};
use crate::exit::{self, usage};
use kube::api::{Api, PostParams};
use margay_api::resources::ipam::validate_ipam_configuration;
use margay_api::{IPAMConfiguration, IPAMConfigurationSpec};

/// Attempts when another writer changes the object between read and write.
const ATTEMPTS: usize = 5;

pub async fn run(c: &ApiClient, a: &IpamConfigureArgs) -> anyhow::Result<u8> {
    if a.strict_affinity.is_none() && a.max_blocks_per_host.is_none() {
        return Err(usage(
            "nothing to change: give --strict-affinity true|false and/or --max-blocks-per-host N",
        ));
    }
    let api: Api<IPAMConfiguration> = Api::all(c.client.clone());
    let name = margay_ipam::IPAM_CONFIG_NAME;
    for _ in 0..ATTEMPTS {
        let current = api
            .get_opt(name)
            .await
            .map_err(|e| api_error(&c.url, "reading IPAMConfiguration default", e))?;
        let old = current.as_ref().map(|c| c.spec.clone()).unwrap_or_default();
        let mut new = current
            .clone()
            .unwrap_or_else(|| IPAMConfiguration::new(name, IPAMConfigurationSpec::default()));
        if let Some(s) = a.strict_affinity {
            new.spec.strict_affinity = s;
        }
        if let Some(m) = a.max_blocks_per_host {
            new.spec.max_blocks_per_host = m;
        }
        validate_ipam_configuration(&new)?;
        if current.is_some() && new.spec == old {
            println!("ipamconfiguration.margay.dev/{name} unchanged");
            return Ok(exit::OK);
        }
        let result = match &current {
            None => api.create(&PostParams::default(), &new).await,
            Some(_) => api.replace(name, &PostParams::default(), &new).await,
        };
        match result {
            Ok(_) => {
                println!(
                    "ipamconfiguration.margay.dev/{name} {}: strictAffinity {} (was {}), maxBlocksPerHost {} (was {})",
                    if current.is_some() {
                        "configured"
                    } else {
                        "created"
                    },
                    new.spec.strict_affinity,
                    old.strict_affinity,
                    new.spec.max_blocks_per_host,
                    old.max_blocks_per_host
                );
                return Ok(exit::OK);
            }
            // Someone else wrote it meanwhile: read again.
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(api_error(&c.url, "writing IPAMConfiguration default", e)),
        }
    }
    anyhow::bail!("IPAMConfiguration default kept changing under us ({ATTEMPTS} attempts)")
}
