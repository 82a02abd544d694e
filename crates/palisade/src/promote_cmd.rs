//! `palisade promote`: staged policies become enforced, in the source they
//! are kept in (docs/staged.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use palisade_agent::datastore::DatastoreError;
use palisade_agent::promote::{self, PolicyName};

#[derive(Args)]
pub struct PromoteArgs {
    /// `namespace/name` of a NetworkPolicy, or `Kind/name` of an
    /// AdminNetworkPolicy, BaselineAdminNetworkPolicy or
    /// ClusterNetworkPolicy.
    #[arg(value_name = "NAME", required = true)]
    names: Vec<String>,
    /// The directory of manifests that holds the policies: their files are
    /// edited, everything but the annotation kept.
    #[arg(long, conflicts_with_all = ["etcd", "kube"], required_unless_present_any = ["etcd", "kube"])]
    dir: Option<PathBuf>,
    /// etcd (comma-separated endpoints): one transaction.
    #[arg(long, value_delimiter = ',', conflicts_with = "kube")]
    etcd: Vec<String>,
    /// The Kubernetes API: one patch per object.
    #[arg(long)]
    kube: bool,
    /// The kubeconfig to use (default: KUBECONFIG, ~/.kube/config or the
    /// in-cluster service account).
    #[arg(long, requires = "kube")]
    kubeconfig: Option<PathBuf>,
}

pub fn run(args: PromoteArgs) -> Result<ExitCode> {
    let mut names = Vec::new();
    for n in &args.names {
        match PolicyName::parse(n) {
            Ok(p) => names.push(p),
            Err(e) => bail!("{e}"),
        }
    }
    names.sort();
    names.dedup();
    let r = match (&args.dir, args.etcd.is_empty(), args.kube) {
        (Some(dir), _, _) => promote::dir(dir, &names),
        (None, false, _) => promote::etcd(&args.etcd, &names),
        (None, true, true) => promote::kube(args.kubeconfig.as_deref(), &names),
        (None, true, false) => bail!("name the source: --dir, --etcd or --kube"),
    };
    match r {
        Ok(done) => {
            for p in done {
                println!("promoted {} ({})", p.name, p.place);
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(DatastoreError::Refused(problems)) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("error: nothing was promoted");
            Ok(ExitCode::from(2))
        }
        Err(e) => Err(e.into()),
    }
}
