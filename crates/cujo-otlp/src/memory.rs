//! The memory budget: one number (`admission.max_in_flight`) bounds every byte that grows
//! with input, split into one account per component so an operator sees where memory goes
//! and no component can starve the one after it.
//!
//! Each [`Component`] gets a limit, a share of the budget (see [`Shares`]); the limits add
//! up to the budget. Memory is counted before it is taken, and each component answers a
//! full account in its own way:
//!
//! - **receivers** (request bodies as their bytes arrive, inflated bodies, accepted requests
//!   waiting for the next stage): refuse the request with the OTLP spec's retryable answer;
//! - **assembler** (held spans and every index over them): release traces early,
//!   those whose root has arrived first (enriched), then the oldest;
//! - **root cache** (origins of released traces): forget the oldest;
//! - **exporter** (batches, the queue, encode buffers, and the assembler's output on its way
//!   there): the stage before it waits, so the receivers fill up and refuse;
//! - **sli** (series and settling events): new series fold into the overflow series and
//!   settling events are recorded early.
//!
//! Accounts are plain atomics: taking and giving back bytes never locks. A [`Lease`] holds
//! bytes of one account and gives them back when dropped; leases move between accounts with
//! the data they pay for ([`Lease::transfer`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A part of cujo that holds memory which grows with input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    Receivers,
    Assembler,
    RootCache,
    Exporter,
    Sli,
}

impl Component {
    pub const ALL: [Component; 5] = [
        Component::Receivers,
        Component::Assembler,
        Component::RootCache,
        Component::Exporter,
        Component::Sli,
    ];

    /// The `component` label on `/metrics` and the key under `admission.shares`.
    pub fn label(self) -> &'static str {
        match self {
            Component::Receivers => "receivers",
            Component::Assembler => "assembler",
            Component::RootCache => "root_cache",
            Component::Exporter => "exporter",
            Component::Sli => "sli",
        }
    }
}

/// What fraction of the budget each component may hold; they add up to at most 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shares(pub [f64; 5]);

impl Shares {
    /// The default split for the stages that run: the receivers, the exporter, and — when
    /// configured — the assembler with its root cache, and the SLI engine. A stage that does
    /// not run gets nothing; its default share goes to the others in proportion.
    pub fn for_stages(assembler: bool, sli: bool) -> Shares {
        // Weights, not fractions: normalised over the stages that run.
        let mut w = [0.0; 5];
        w[Component::Receivers as usize] = 1.0;
        // The assembler holds spans until their root arrives and then only the root
        // (`assembler.hold: root`); what it releases waits in the exporter's share until it is
        // encoded, so at a gateway's rates the exporter needs the larger share.
        w[Component::Exporter as usize] = 3.0;
        if assembler {
            w[Component::Assembler as usize] = 2.0;
            w[Component::RootCache as usize] = 1.0;
        }
        if assembler && sli {
            w[Component::Sli as usize] = 1.0;
        }
        let sum: f64 = w.iter().sum();
        Shares(w.map(|x| x / sum))
    }

    pub fn of(&self, c: Component) -> f64 {
        self.0[c as usize]
    }
}

/// The budget and its accounts. One per process, shared by reference.
pub struct MemoryBudget {
    total: usize,
    accounts: [AccountState; 5],
    /// Times the allocator was made to give freed memory back to the OS because the
    /// resident set passed the budget plus its slack (see the binary's allocator governor).
    purges: AtomicU64,
    /// The share of each configured limit in force, per mille: lowered by the allocator
    /// governor while the resident set stays too far over the budget (memory the counts
    /// cannot see: the allocator's fragmentation), raised back once it is under.
    scale: AtomicUsize,
}

/// The lowest [`MemoryBudget::set_scale_permille`] goes: half of every limit.
pub const MIN_SCALE_PERMILLE: usize = 500;

struct AccountState {
    limit: usize,
    used: AtomicUsize,
    /// Times the account could not take what was asked (a refusal, an early release, a wait).
    full: AtomicU64,
    /// Woken when bytes are given back, for stages that wait for room.
    freed: Notify,
}

/// `limit` scaled by `permille`, without overflow for unlimited (`usize::MAX`) limits.
pub fn scaled(limit: usize, permille: usize) -> usize {
    if permille >= 1000 {
        return limit;
    }
    ((limit as u128 * permille as u128) / 1000) as usize
}

impl MemoryBudget {
    /// A budget of `total` bytes split by `shares`.
    pub fn new(total: usize, shares: Shares) -> Arc<Self> {
        let accounts = Component::ALL.map(|c| AccountState {
            limit: (total as f64 * shares.of(c).clamp(0.0, 1.0)) as usize,
            used: AtomicUsize::new(0),
            full: AtomicU64::new(0),
            freed: Notify::new(),
        });
        Arc::new(Self {
            total,
            accounts,
            purges: AtomicU64::new(0),
            scale: AtomicUsize::new(1000),
        })
    }

    /// One account of the budget.
    pub fn account(self: &Arc<Self>, component: Component) -> Account {
        Account {
            budget: self.clone(),
            component,
        }
    }

    /// The whole budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Counts one forced return of freed memory to the OS.
    pub fn note_purge(&self) {
        self.purges.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes held by every account together.
    pub fn used(&self) -> usize {
        self.accounts
            .iter()
            .map(|a| a.used.load(Ordering::Relaxed))
            .sum()
    }

    /// A component's limit in force: its share of the budget, scaled down while the
    /// resident set is too far over the budget.
    pub fn limit(&self, component: Component) -> usize {
        scaled(
            self.accounts[component as usize].limit,
            self.scale_permille(),
        )
    }

    /// A component's share of the budget as configured.
    pub fn configured_limit(&self, component: Component) -> usize {
        self.accounts[component as usize].limit
    }

    /// The share of each configured limit in force, per mille (1000 = all of it).
    pub fn scale_permille(&self) -> usize {
        self.scale.load(Ordering::Relaxed)
    }

    /// Sets the share of each configured limit in force (clamped to
    /// [`MIN_SCALE_PERMILLE`]..=1000); raising it wakes whoever waits for room.
    pub fn set_scale_permille(&self, permille: usize) {
        let permille = permille.clamp(MIN_SCALE_PERMILLE, 1000);
        let was = self.scale.swap(permille, Ordering::Relaxed);
        if permille > was {
            for a in &self.accounts {
                a.freed.notify_waiters();
            }
        }
    }

    pub fn used_by(&self, component: Component) -> usize {
        self.accounts[component as usize]
            .used
            .load(Ordering::Relaxed)
    }

    /// How often `component`'s account was full when asked for more.
    pub fn full_count(&self, component: Component) -> u64 {
        self.accounts[component as usize]
            .full
            .load(Ordering::Relaxed)
    }

    /// Appends the budget's metrics in the Prometheus text format.
    pub fn render(&self, out: &mut crate::prom::Exposition) {
        use crate::prom::Family;
        Family::gauge(
            out,
            "cujo_memory_budget_bytes",
            "The memory budget (admission.max_in_flight): every byte that grows with input is counted against it.",
        )
        .sample(&[], self.total as f64);
        Family::gauge(
            out,
            "cujo_memory_limit_scale_ratio",
            "The share of each component's limit in force: below 1 while the resident set stays more than 56 MiB over the budget (memory the counts cannot see, such as the allocator's fragmentation).",
        )
        .sample(&[], self.scale_permille() as f64 / 1000.0);
        let mut f = Family::gauge(
            out,
            "cujo_memory_limit_bytes",
            "Each component's share of the memory budget, as in force now (see cujo_memory_limit_scale_ratio).",
        );
        for c in Component::ALL {
            f.sample(&[("component", c.label())], self.limit(c) as f64);
        }
        let mut f = Family::gauge(
            out,
            "cujo_memory_used_bytes",
            "Bytes each component holds now, counted against its share of the budget.",
        );
        for c in Component::ALL {
            f.sample(&[("component", c.label())], self.used_by(c) as f64);
        }
        let mut f = Family::counter(
            out,
            "cujo_memory_full_total",
            "Times a component's share was full when it asked for more (receivers refused a request, the assembler released early, the root cache forgot, a stage waited for the exporter, SLI series overflowed).",
        );
        for c in Component::ALL {
            f.sample(&[("component", c.label())], self.full_count(c) as f64);
        }
        Family::counter(
            out,
            "cujo_memory_purges_total",
            "Times the resident set passed the budget plus its slack and the allocator was made to return the freed memory it keeps for reuse.",
        )
        .sample(&[], self.purges.load(Ordering::Relaxed) as f64);
        // The names earlier versions exported, kept for dashboards built on them.
        Family::gauge(
            out,
            "cujo_admission_in_flight_bytes",
            "Bytes held by every component together (the sum of cujo_memory_used_bytes).",
        )
        .sample(&[], self.used() as f64);
        Family::gauge(
            out,
            "cujo_admission_max_in_flight_bytes",
            "The memory budget (admission.max_in_flight).",
        )
        .sample(&[], self.total as f64);
    }
}

/// One component's account: take bytes from it, give them back by dropping the [`Lease`].
#[derive(Clone)]
pub struct Account {
    budget: Arc<MemoryBudget>,
    component: Component,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("component", &self.component.label())
            .field("used", &self.used())
            .field("limit", &self.limit())
            .finish()
    }
}

impl Account {
    fn state(&self) -> &AccountState {
        &self.budget.accounts[self.component as usize]
    }

    pub fn component(&self) -> Component {
        self.component
    }

    /// The account's limit in force (see [`MemoryBudget::limit`]).
    pub fn limit(&self) -> usize {
        self.budget.limit(self.component)
    }

    /// The share of the configured limit in force, per mille.
    pub fn scale_permille(&self) -> usize {
        self.budget.scale_permille()
    }

    pub fn used(&self) -> usize {
        self.state().used.load(Ordering::Relaxed)
    }

    /// Bytes the account can still take.
    pub fn available(&self) -> usize {
        self.limit().saturating_sub(self.used())
    }

    /// Whether the account is at or over its limit.
    pub fn is_full(&self) -> bool {
        self.used() >= self.limit()
    }

    /// An empty lease on this account, to grow later.
    pub fn empty_lease(&self) -> Lease {
        Lease {
            account: self.clone(),
            bytes: 0,
        }
    }

    /// Takes `bytes` if they fit under the limit. One item larger than the whole limit is
    /// still taken when the account holds nothing, so it cannot be refused forever (limits
    /// are validated to hold the largest request the receivers accept).
    pub fn try_take(&self, bytes: usize) -> Option<Lease> {
        let mut lease = self.empty_lease();
        lease.try_grow(bytes).then_some(lease)
    }

    /// Takes `bytes` whatever the account holds: only for bytes whose bound is kept
    /// elsewhere (the assembler reporting what it holds after releasing down to its limit).
    pub fn take(&self, bytes: usize) -> Lease {
        let mut lease = self.empty_lease();
        lease.grow(bytes);
        lease
    }

    /// Counts one time the account was full (a refusal, an early release, a wait).
    pub fn note_full(&self) {
        self.state().full.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves once the account is below its limit (at once if it is now).
    pub async fn wait_for_room(&self) {
        loop {
            let freed = self.state().freed.notified();
            tokio::pin!(freed);
            // Register before checking, so a release between the check and the wait is seen.
            freed.as_mut().enable();
            if !self.is_full() {
                return;
            }
            freed.await;
        }
    }

    fn add(&self, bytes: usize) {
        if bytes > 0 {
            self.state().used.fetch_add(bytes, Ordering::AcqRel);
        }
    }

    fn sub(&self, bytes: usize) {
        if bytes > 0 {
            self.state().used.fetch_sub(bytes, Ordering::AcqRel);
            self.state().freed.notify_waiters();
        }
    }
}

/// Bytes held in one account; given back on drop.
pub struct Lease {
    account: Account,
    bytes: usize,
}

impl Lease {
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn component(&self) -> Component {
        self.account.component
    }

    /// Takes `more` bytes if they fit under the limit (or the account holds only this
    /// lease's bytes: one item is never refused forever); `false` leaves the lease as it was.
    pub fn try_grow(&mut self, more: usize) -> bool {
        if more == 0 {
            return true;
        }
        let state = self.account.state();
        let limit = self.account.limit();
        let mut current = state.used.load(Ordering::Relaxed);
        loop {
            let alone = current == self.bytes;
            if !alone && current.saturating_add(more) > limit {
                return false;
            }
            match state.used.compare_exchange_weak(
                current,
                current + more,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        self.bytes += more;
        true
    }

    /// Takes `more` bytes whatever the account holds (see [`Account::take`]).
    pub fn grow(&mut self, more: usize) {
        self.account.add(more);
        self.bytes += more;
    }

    /// Gives back `less` bytes (at most what the lease holds).
    pub fn shrink(&mut self, less: usize) {
        let less = less.min(self.bytes);
        self.account.sub(less);
        self.bytes -= less;
    }

    /// Makes the lease hold exactly `bytes`, whatever the account holds: for a component
    /// that reports what it holds after keeping itself within its limit.
    pub fn set(&mut self, bytes: usize) {
        if bytes > self.bytes {
            self.grow(bytes - self.bytes);
        } else {
            self.shrink(self.bytes - bytes);
        }
    }

    /// Moves the bytes to another account (the data they pay for moved to another stage).
    pub fn transfer(mut self, to: &Account) -> Lease {
        let bytes = std::mem::take(&mut self.bytes);
        self.account.sub(bytes);
        to.add(bytes);
        Lease {
            account: to.clone(),
            bytes,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.account.sub(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(total: usize) -> Arc<MemoryBudget> {
        MemoryBudget::new(total, Shares::for_stages(false, false))
    }

    #[tokio::test]
    async fn lowered_limits_refuse_sooner_and_raising_them_wakes_waiters() {
        let b = budget(1000 * 1024);
        let e = b.account(Component::Exporter);
        let configured = e.limit();
        let held = e.take(configured * 3 / 4);
        assert!(!e.is_full());
        b.set_scale_permille(600);
        assert_eq!(e.limit(), configured * 6 / 10);
        assert_eq!(b.configured_limit(Component::Exporter), configured);
        assert!(e.is_full(), "what is held is now over the limit in force");
        assert!(e.try_take(1).is_none());
        b.set_scale_permille(0);
        assert_eq!(b.scale_permille(), MIN_SCALE_PERMILLE, "never below half");
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        b.set_scale_permille(1000);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken when the limits come back")
            .expect("waiter");
        assert!(e.try_take(1).is_some());
        drop(held);
        assert_eq!(scaled(usize::MAX, 500), usize::MAX / 2);
        assert_eq!(scaled(usize::MAX, 1000), usize::MAX);
    }

    #[test]
    fn shares_add_up_to_the_budget_and_skip_stages_that_do_not_run() {
        for (assembler, sli) in [(false, false), (true, false), (true, true)] {
            let s = Shares::for_stages(assembler, sli);
            let sum: f64 = s.0.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{s:?}");
            assert_eq!(s.of(Component::Assembler) > 0.0, assembler);
            assert_eq!(s.of(Component::Sli) > 0.0, assembler && sli);
        }
        let b = MemoryBudget::new(800, Shares::for_stages(true, true));
        let limits: usize = Component::ALL.iter().map(|c| b.limit(*c)).sum();
        assert!((795..=800).contains(&limits), "{limits}");
    }

    #[test]
    fn bytes_are_refused_past_the_limit_and_given_back_on_drop() {
        let b = budget(400); // receivers get a quarter: 100
        let r = b.account(Component::Receivers);
        let first = r.try_take(60).expect("fits");
        assert!(r.try_take(50).is_none(), "over the limit");
        let second = r.try_take(40).expect("fits exactly");
        assert_eq!(b.used_by(Component::Receivers), 100);
        assert!(r.is_full());
        drop(first);
        drop(second);
        assert_eq!(b.used(), 0);
        let huge = r
            .try_take(1000)
            .expect("alone, an item larger than the limit passes");
        assert!(r.try_take(1).is_none());
        drop(huge);
    }

    #[test]
    fn a_lease_grows_alone_past_the_limit_but_not_beside_others() {
        let b = budget(400);
        let r = b.account(Component::Receivers);
        let mut body = r.empty_lease();
        assert!(body.try_grow(80));
        assert!(body.try_grow(80), "the only lease may grow past the limit");
        let other = r.try_take(0).expect("nothing");
        drop(other);
        let small = r.take(1);
        assert!(!body.try_grow(1), "another lease holds bytes now");
        drop(small);
        body.shrink(60);
        assert_eq!(body.bytes(), 100);
        assert_eq!(b.used(), 100);
    }

    #[test]
    fn a_transferred_lease_moves_its_bytes_between_accounts() {
        let b = budget(400);
        let lease = b.account(Component::Receivers).take(70);
        let moved = lease.transfer(&b.account(Component::Exporter));
        assert_eq!(b.used_by(Component::Receivers), 0);
        assert_eq!(b.used_by(Component::Exporter), 70);
        assert_eq!(moved.component(), Component::Exporter);
        drop(moved);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn set_follows_a_component_that_reports_what_it_holds() {
        let b = budget(400);
        let mut held = b.account(Component::Exporter).empty_lease();
        held.set(500);
        assert_eq!(b.used_by(Component::Exporter), 500);
        held.set(20);
        assert_eq!(b.used_by(Component::Exporter), 20);
    }

    #[tokio::test]
    async fn waiting_for_room_resolves_when_bytes_come_back() {
        let b = budget(400);
        let e = b.account(Component::Exporter);
        let full = e.take(e.limit());
        let waiter = tokio::spawn({
            let e = e.clone();
            async move { e.wait_for_room().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(full);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }
}
