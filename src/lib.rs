//! vpcfw: AWS VPC Network ACLs and Security Groups, enforced exactly as AWS does.
#![warn(missing_docs)]

pub mod conntrack;
pub mod matcher;
