//! Payload-inspection benchmark data shared by `benches/inspect.rs` and `benches/pipeline.rs`
//! (`#[path = "common/http.rs"] mod http;`): 100 realistic byte-match patterns and benign
//! 1460-byte HTTP request payloads that contain none of them.
// Each benchmark uses only some of these.
#![allow(dead_code)]

use vpcfw::inspect::{Rule, RuleAction, RuleScope, RuleSet};

/// The 100 [`PATTERNS`] as rules named `r0`…`r99`, even ones `block` and odd ones `count`, all
/// with `scope` and (with `lowercase`) `LOWERCASE`.
pub fn rules(lowercase: bool, scope: RuleScope) -> RuleSet {
    RuleSet {
        file: "bench".into(),
        rules: PATTERNS
            .iter()
            .enumerate()
            .map(|(i, p)| Rule {
                name: format!("r{i}"),
                action: if i % 2 == 0 {
                    RuleAction::Block
                } else {
                    RuleAction::Count
                },
                pattern: p.as_bytes().to_vec(),
                lowercase,
                scope: scope.clone(),
                path: format!("ByteMatchRules[{i}]"),
            })
            .collect(),
    }
}

/// 100 realistic patterns: SSRF / instance-metadata strings, SQL injection, XSS, path
/// traversal, command injection, Log4Shell tokens (lowercase: meant for `LOWERCASE` rules).
pub const PATTERNS: [&str; 100] = [
    "169.254.169.254",
    "metadata.google.internal",
    "/latest/meta-data",
    "/computemetadata/v1",
    "100.100.100.200",
    "fd00:ec2::254",
    "/latest/api/token",
    "x-aws-ec2-metadata-token",
    "file://",
    "gopher://",
    "dict://",
    "127.0.0.1",
    "0x7f000001",
    "2130706433",
    "[::1]",
    "0177.0.0.1",
    "169.254.170.2",
    "/latest/user-data",
    "iam/security-credentials",
    "union select",
    "union all select",
    "' or '1'='1",
    "\" or \"1\"=\"1",
    " or 1=1",
    "sleep(",
    "benchmark(",
    "waitfor delay",
    "information_schema",
    "pg_sleep",
    "xp_cmdshell",
    "load_file(",
    "into outfile",
    "@@version",
    "char(",
    "group_concat(",
    "drop table",
    "insert into",
    "'; --",
    "/**/",
    "0x3a",
    "having 1=1",
    "order by 1--",
    "sysobjects",
    "utl_http",
    "dbms_pipe",
    "<script",
    "javascript:",
    "onerror=",
    "onload=",
    "<iframe",
    "<svg",
    "document.cookie",
    "alert(",
    "eval(",
    "string.fromcharcode",
    "vbscript:",
    "expression(",
    "<object",
    "<embed",
    "srcdoc=",
    "onmouseover=",
    "../",
    "..\\",
    "%2e%2e%2f",
    "%2e%2e/",
    "..%2f",
    "%252e%252e",
    "/etc/passwd",
    "/etc/shadow",
    "c:\\windows",
    "win.ini",
    "/proc/self/environ",
    "boot.ini",
    "web-inf/web.xml",
    "; cat ",
    "| nc ",
    "&& wget",
    "$(curl",
    "`id`",
    "/bin/sh",
    "/bin/bash",
    "cmd.exe",
    "powershell",
    "${jndi:",
    "${lower:",
    "${env:",
    "${::-j}",
    "ldap://",
    "rmi://",
    "php://input",
    "data://text",
    "expect://",
    "<?php",
    "base64_decode(",
    "system(",
    "passthru(",
    "shell_exec(",
    "/.git/config",
    "/.env",
    "wp-config.php",
];

/// A benign 1460-byte HTTP request (headers and a JSON body) that contains no pattern.
pub fn payload(seed: u64) -> Vec<u8> {
    let mut s = format!(
        "POST /api/v2/orders/{seed}/items?include=details&page=2 HTTP/1.1\r\nHost: shop.example.com\r\n\
         User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
         Accept: application/json, text/plain, */*\r\nAccept-Language: en-US,en;q=0.5\r\n\
         Accept-Encoding: gzip, deflate, br\r\nContent-Type: application/json\r\n\
         Cookie: session=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U; theme=dark\r\n\
         Connection: keep-alive\r\n\r\n{{\"items\":["
    );
    let words = [
        "the",
        "customer",
        "order",
        "shipping",
        "address",
        "street",
        "quantity",
        "price",
        "currency",
        "EUR",
        "description",
        "blue",
        "cotton",
        "shirt",
        "size",
        "medium",
        "delivery",
        "express",
        "notes",
        "please",
        "leave",
        "at",
        "door",
        "gift",
        "wrap",
        "yes",
        "coupon",
        "SPRING",
        "discount",
        "total",
    ];
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    while s.len() < 1460 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = words[(x >> 33) as usize % words.len()];
        let b = words[(x >> 20) as usize % words.len()];
        s.push_str(&format!(
            "{{\"sku\":\"A{}\",\"note\":\"{a} {b}\"}},",
            (x >> 40) % 10000
        ));
    }
    s.truncate(1460);
    s.into_bytes()
}
