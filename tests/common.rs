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

/// Several documents in one manifest.
pub fn documents(docs: &[String]) -> String {
    docs.join("---\n")
}
