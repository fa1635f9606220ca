//! The bundled three-tier example snapshot, for the targets that judge packets against it
//! (included with `#[path = "three_tier.rs"] mod three_tier;`).

use vpcfw::aws::SnapshotBuilder;
use vpcfw::compile::CompiledPolicy;

/// The example's `describe-*` documents, by short name.
pub const DOCS: [(&str, &str); 6] = [
    ("acls", include_str!("../../examples/three-tier/describe-network-acls.json")),
    ("enis", include_str!("../../examples/three-tier/describe-network-interfaces.json")),
    ("routes", include_str!("../../examples/three-tier/describe-route-tables.json")),
    ("sgs", include_str!("../../examples/three-tier/describe-security-groups.json")),
    ("subnets", include_str!("../../examples/three-tier/describe-subnets.json")),
    ("vpcs", include_str!("../../examples/three-tier/describe-vpcs.json")),
];

/// The example compiled, with the documents named in `replace` swapped for the given texts.
pub fn compile(replace: &[(&str, &str)]) -> CompiledPolicy {
    let mut b = SnapshotBuilder::new();
    for (name, text) in DOCS {
        let text = replace.iter().find(|(n, _)| *n == name).map_or(text, |(_, t)| *t);
        b.add_document(name, text).expect("bundled example loads");
    }
    CompiledPolicy::compile(b.finish().expect("bundled example loads").policy).expect("compiles")
}
