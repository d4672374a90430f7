//! Manifest builders shared by the integration tests.

/// A pool manifest.
pub fn pool(name: &str, addresses: &[&str]) -> String {
    format!(
        "apiVersion: raftlb.io/v1alpha1\nkind: IPAddressPool\nmetadata: {{name: {name}}}\nspec:\n  addresses: [{}]\n",
        addresses.join(", ")
    )
}

/// A LoadBalancer Service with one TCP port.
pub fn service(namespace: &str, name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: {name}}}\n  ports: [{{port: 80}}]\n"
    )
}

/// The last `n` lines of `text` (a peer's log, for a failing test's output), each ending in a
/// newline.
pub fn last_lines(text: &str, n: usize) -> String {
    let mut tail: Vec<&str> = text.lines().rev().take(n).collect();
    tail.reverse();
    tail.iter().map(|l| format!("{l}\n")).collect()
}

/// Several documents in one manifest.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn last_lines_keeps_the_end_in_order() {
        assert_eq!(super::last_lines("a\nb\nc\n", 2), "b\nc\n");
        assert_eq!(super::last_lines("a", 5), "a\n");
        assert_eq!(super::last_lines("", 5), "");
    }
}
