//! vpcfw: AWS VPC Network ACLs and Security Groups, enforced exactly as AWS does.
#![warn(missing_docs)]

pub mod aws;
pub mod compile;
pub mod conntrack;
pub mod events;
pub mod firewall;
pub mod matcher;
pub mod policy;
