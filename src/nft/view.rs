//! What a listed run table holds: its chains, its sets with their live element
//! counts, and its rules with their packet counters. Both the table builders (which
//! compare what they made with what is there) and the execution code (which parses
//! `nft`'s JSON into it) use it, so it sits apart from both.

/// A run table as `nft -j list table` (or its JSON `list` command) shows it: enough to know what is in it and
/// how many packets its rules matched.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct TableView {
    /// Chain names.
    pub chains: Vec<String>,
    /// Sets with their element count.
    pub sets: Vec<SetView>,
    /// Rules with their counters.
    pub rules: Vec<RuleView>,
}

/// A set in a [`TableView`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct SetView {
    pub name: String,
    /// Elements not expired yet.
    pub elems: usize,
}

/// A rule in a [`TableView`].
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct RuleView {
    pub chain: String,
    /// Packets counted by the rule's counters (in rule order).
    pub counters: Vec<u64>,
    pub comment: Option<String>,
}

impl TableView {
    /// Packets counted by the first counter of every rule in `chains`.
    pub(crate) fn packets_in(&self, chains: &[String]) -> u64 {
        self.rules
            .iter()
            .filter(|r| chains.contains(&r.chain))
            .filter_map(|r| r.counters.first())
            .sum()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.sets.is_empty()
    }

    pub(crate) fn parse(doc: &serde_json::Value) -> Self {
        let mut v = TableView::default();
        let items = doc
            .get("nftables")
            .and_then(|n| n.as_array())
            .cloned()
            .unwrap_or_default();
        let str_of = |o: &serde_json::Value, k: &str| {
            o.get(k)
                .and_then(|x| x.as_str())
                .unwrap_or_default()
                .to_string()
        };
        for item in &items {
            if let Some(c) = item.get("chain") {
                v.chains.push(str_of(c, "name"));
            } else if let Some(st) = item.get("set") {
                let elems = st
                    .get("elem")
                    .and_then(|e| e.as_array())
                    .map_or(0, |a| a.len());
                v.sets.push(SetView {
                    name: str_of(st, "name"),
                    elems,
                });
            } else if let Some(r) = item.get("rule") {
                let counters = r
                    .get("expr")
                    .and_then(|e| e.as_array())
                    .map(|stmts| {
                        stmts
                            .iter()
                            .filter_map(|st| st.get("counter")?.get("packets")?.as_u64())
                            .collect()
                    })
                    .unwrap_or_default();
                v.rules.push(RuleView {
                    chain: str_of(r, "chain"),
                    counters,
                    comment: r.get("comment").and_then(|c| c.as_str()).map(String::from),
                });
            }
        }
        v
    }
}
