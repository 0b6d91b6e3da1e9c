// Replicator: one thread per target; connect, batch, ship, retry, back off.
#include "replicate/replicator.hpp"

#include <pthread.h>

#include <spdlog/spdlog.h>

#include <cstring>
#include <thread>

namespace mirrorfs::replicate {
namespace {

std::atomic<int> g_next_index{0};

std::string errno_name(int e) {
  const char* n = ::strerrorname_np(e);
  return n != nullptr ? n : std::to_string(e);
}

ShipOptions ship_options(const ReplicatorOptions& o) {
  ShipOptions s;
  s.delete_missing = o.delete_missing;
  s.in_place_min = o.in_place_min;
  return s;
}

}  // namespace

Replicator::Replicator(Journal& journal, TargetSpec spec, const Fd& source_root, ReplicatorOptions opt,
                       std::shared_ptr<spdlog::logger> log, TransportFactory factory)
    : journal_(journal),
      root_(source_root),
      spec_(std::move(spec)),
      opt_(opt),
      log_(std::move(log)),
      factory_(factory ? std::move(factory) : TransportFactory(connect)),
      id_(journal.add_target(spec_.url)),
      index_(g_next_index.fetch_add(1)),
      shipper_(source_root, ship_options(opt_), log_),
      initial_done_(opt_.initial_sync == SyncMode::None &&
                    (!opt_.state || opt_.state->recovery().previous != Recovery::Previous::Dirty)) {}

Replicator::~Replicator() { stop(); }

void Replicator::start() {
  if (thread_.joinable()) return;
  if (opt_.state) opt_.state->start(journal_, id_);
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void Replicator::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  journal_.wake_all();
  thread_.join();
  if (opt_.state) {
    const QueueStats q = journal_.stats(id_);
    opt_.state->finish(initial_done_.load() && q.pending + q.in_flight == 0);
  }
}

bool Replicator::drain(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!initial_done_.load()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return journal_.wait_idle(id_, deadline);
}

ReplicatorStatus Replicator::status() const {
  ReplicatorStatus s;
  s.target = spec_.url;
  s.connected = connected_.load();
  const QueueStats q = journal_.stats(id_);
  s.pending = q.pending + q.in_flight;
  s.initial_sync_done = initial_done_.load();
  s.initial_entries = initial_entries_.load();
  s.initial_mode = sync_mode_name(static_cast<SyncMode>(rc_mode_.load()));
  s.initial_scanned = rc_scanned_.load();
  s.initial_to_send = rc_to_send_.load();
  s.initial_bytes_to_send = rc_bytes_to_send_.load();
  s.initial_bytes_sent = rc_bytes_sent_.load();
  s.initial_checksums = rc_checksums_.load();
  s.initial_seconds = rc_seconds_.load();
  s.initial_eta_seconds = rc_eta_.load();
  if (!s.initial_sync_done) s.pending += 1;  // the tree itself is still pending
  s.lag_seconds = std::chrono::duration<double>(q.oldest_age).count();
  s.acked_seq = q.acked_seq;
  s.last_seq = q.last_seq;
  s.bytes_sent = bytes_sent_.load();
  s.files_sent = files_sent_.load();
  s.batches = batches_.load();
  std::lock_guard lk(err_mu_);
  s.last_error = last_error_;
  s.last_error_time = last_error_time_;
  return s;
}

void Replicator::run(std::stop_token st) noexcept {
  const std::string name = "mfs-repl-" + std::to_string(index_);
  ::pthread_setname_np(::pthread_self(), name.substr(0, 15).c_str());
  while (!st.stop_requested()) {
    try {
      loop(st);
    } catch (const std::exception& e) {  // bad_alloc and friends: back off, carry on
      note_error(std::string("unexpected: ") + e.what());
      log_->error("repl[{}]: unexpected {}; retrying in 1s", index_, e.what());
      sleep_for(st, std::chrono::seconds(1));
    } catch (...) {
      log_->error("repl[{}]: unexpected exception; retrying in 1s", index_);
      sleep_for(st, std::chrono::seconds(1));
    }
  }
  transport_.reset();
  connected_ = false;
}

void Replicator::loop(std::stop_token st) {
  while (!st.stop_requested()) {
    if (!recovery_applied_) {
      apply_recovery();
      recovery_applied_ = true;
    }
    if (!ensure_connected(st)) continue;  // (ssh's handshake overlaps the scanner's walk)
    if (!initial_done_.load() && !pass_gate(st)) continue;
    if (initial_done_.load() && (sweep_all_ || !sweep_dirs_.empty()) && !sweep_temps(st)) continue;
    if (!initial_done_.load()) {
      if (!ship_initial_chunk(st)) sleep_for(st, next_backoff());
      continue;
    }
    if (!journal_.wait_for_work(id_, st)) return;
    sleep_for(st, opt_.delay);  // let a burst of changes coalesce
    if (st.stop_requested()) return;
    if (ship_one(st)) {
      backoff_ = std::chrono::milliseconds(0);
    } else {
      sleep_for(st, next_backoff());
    }
  }
}

bool Replicator::ensure_connected(std::stop_token st) {
  if (transport_) return true;
  Result<std::unique_ptr<Transport>> t = factory_(spec_);
  if (!t) {
    const auto wait = next_backoff();
    note_error(t.error().what + ": " + errno_name(t.error().code));
    log_->warn("repl[{}]: connect {} failed: {}: {}; retrying in {}ms", index_, quoted(spec_.url),
               t.error().what, errno_name(t.error().code), wait.count());
    sleep_for(st, wait);
    return false;
  }
  transport_ = std::move(*t);
  shipper_.reset();
  connected_ = true;
  log_->info("repl[{}]: connected to {}", index_, quoted(spec_.url));
  return true;
}

// Ships one journal batch; false if the caller should back off before the next.
bool Replicator::ship_one(std::stop_token st) {
  Batch b = journal_.take_batch(id_, opt_.max_batch);
  if (b.entries.empty()) return true;
  return ship_batch(st, b, true);
}

// What the previous run left (persistent state) decides the mode of the
// startup pass and what it compares by content. Logs one line.
void Replicator::apply_recovery() {
  walk_opt_ = ReconcileOptions{};
  walk_opt_.mode = opt_.initial_sync;
  walk_opt_.delete_missing = opt_.delete_missing;
  walk_opt_.dirs_per_exchange = opt_.reconcile_dirs;
  if (opt_.state) {
    const Recovery& rec = opt_.state->recovery();
    std::string what = rec.describe();
    if (rec.previous == Recovery::Previous::Clean && walk_opt_.mode == SyncMode::Checksum) {
      walk_opt_.mode = SyncMode::Quick;
      what += "; a restart after a clean unmount skips the checksum pass (quick compare)";
    } else if (rec.previous == Recovery::Previous::Dirty) {
      walk_opt_.suspects.insert(rec.paths.begin(), rec.paths.end());
      walk_opt_.suspect_since_ns = rec.suspect_since_ns;
      if (walk_opt_.mode == SyncMode::None && rec.overflow) {
        walk_opt_.mode = SyncMode::Quick;  // the list is incomplete: compare everything
        what += "; initial_sync=none, but the pending list overflowed: running a quick reconcile";
      } else if (walk_opt_.mode == SyncMode::None) {
        // No full pass: ship again what was pending and whatever changed
        // since the last heartbeat, and compare the directories among them
        // (and the parents of pending paths) entry by entry, which finds
        // deletions made just before the crash.
        std::size_t n = 0;
        std::set<std::string> scope{std::string()};
        auto again = [&](const std::string& path, bool is_dir) {
          if (is_dir) {
            scope.insert(path);
            return;
          }
          journal_.record({ChangeKind::Created, path});
          ++n;
        };
        for (const std::string& p : rec.paths) {
          again(p, false);
          const auto slash = p.rfind('/');
          scope.insert(slash == std::string::npos ? std::string() : p.substr(0, slash));
        }
        if (rec.suspect_since_ns != 0) for_each_recent(root_, rec.suspect_since_ns, again);
        walk_opt_.mode = SyncMode::Quick;
        walk_opt_.scope = std::move(scope);
        walk_opt_.suspects.clear();
        walk_opt_.suspect_since_ns = 0;  // those entries are queued already
        what += "; initial_sync=none: " + std::to_string(n) + " path(s) queued to ship again, " +
                std::to_string(walk_opt_.scope.size()) + " directories compared";
      }
    }
    log_->info("repl[{}]: state {}: {}", index_, quoted(opt_.state->path()), what);
  }
  rc_mode_ = static_cast<int>(walk_opt_.mode);
  if (walk_opt_.mode == SyncMode::None) initial_done_ = true;
}

bool Replicator::pass_gate(std::stop_token st) {
  if (gate_passed_ || !opt_.ready_gate) return true;
  gate_passed_ = opt_.ready_gate(st);
  if (!gate_passed_) sleep_for(st, std::chrono::milliseconds(100));
  return gate_passed_;
}

// The next part of the startup reconcile: ship marks found by the last
// step (initial_batch at a time), or take the next step.
bool Replicator::ship_initial_chunk(std::stop_token st) {
  if (!walk_) {
    walk_ = std::make_unique<Reconciler>(root_, walk_opt_);
    walk_marks_.entries.clear();
    walk_started_ = walk_logged_ = std::chrono::steady_clock::now();
    walk_bytes_base_ = bytes_sent_.load();
    initial_entries_ = 0;
    log_->info("repl[{}]: {} ({}) to {} started", index_, pass_name(), sync_mode_name(walk_opt_.mode),
               quoted(spec_.url));
  }
  if (walk_marks_.entries.empty()) {
    if (walk_->done()) {
      finish_reconcile();
      return true;
    }
    const std::uint64_t before = transport_->bytes_sent();
    Result<Batch> b = walk_->step(*transport_);
    bytes_sent_ += transport_->bytes_sent() - before;
    if (!b) {
      walk_.reset();  // start the pass again once reconnected
      const auto wait = next_backoff();
      note_error(b.error().what + ": " + errno_name(b.error().code));
      log_->warn("repl[{}]: initial sync to {} failed: {}: {}; reconnecting in {}ms", index_,
                 quoted(spec_.url), b.error().what, errno_name(b.error().code), wait.count());
      transport_.reset();
      connected_ = false;
      sleep_for(st, wait);
      return true;
    }
    walk_marks_ = std::move(*b);
    publish_progress(false);
    if (walk_marks_.entries.empty()) return true;
  }
  Batch chunk;
  std::vector<Entry>& all = walk_marks_.entries;
  const std::size_t n = std::min(all.size(), std::max<std::size_t>(opt_.initial_batch, 1));
  chunk.entries.assign(std::make_move_iterator(all.begin()),
                       std::make_move_iterator(all.begin() + static_cast<std::ptrdiff_t>(n)));
  all.erase(all.begin(), all.begin() + static_cast<std::ptrdiff_t>(n));
  if (log_->should_log(spdlog::level::debug)) {
    for (const Entry& e : chunk.entries)
      log_->debug("repl[{}]: initial sync: {}{}{}{}", index_, quoted(e.path), e.exist ? " exist" : "",
                  e.meta ? " meta" : "", e.replace ? " replace" : "");
  }
  const bool ok = ship_batch(st, chunk, false);
  if (walk_) initial_entries_ += n;  // (a broken session reset the pass)
  publish_progress(false);
  return ok;
}

void Replicator::publish_progress(bool force) {
  if (!walk_) return;
  const ReconcileCounters& c = walk_->counters();
  const auto now = std::chrono::steady_clock::now();
  const double secs = std::chrono::duration<double>(now - walk_started_).count();
  const std::uint64_t sent = bytes_sent_.load() - walk_bytes_base_;
  rc_scanned_ = c.scanned;
  rc_to_send_ = c.to_send;
  rc_bytes_to_send_ = c.bytes_to_send;
  rc_bytes_sent_ = sent;
  rc_checksums_ = c.checksums;
  rc_seconds_ = secs;
  double eta = -1;
  if (sent > 0 && secs > 0.5) {
    const double rate = static_cast<double>(sent) / secs;
    const double left = c.bytes_to_send > sent ? static_cast<double>(c.bytes_to_send - sent) : 0.0;
    eta = left / rate;
  }
  rc_eta_ = eta;
  if (!force && now - walk_logged_ < std::chrono::seconds(5)) return;
  walk_logged_ = now;
  if (force) return;
  log_->info("repl[{}]: initial sync ({}) to {}: {} entries scanned, {} to send ({} shipped), "
             "{} of {} bytes sent, {} checksums, {:.0f}s elapsed, ETA {}",
             index_, sync_mode_name(walk_opt_.mode), quoted(spec_.url), c.scanned, c.to_send,
             initial_entries_.load(), sent, c.bytes_to_send, c.checksums, secs,
             eta < 0 ? std::string("unknown") : std::to_string(static_cast<long long>(eta)) + "s");
}

void Replicator::finish_reconcile() {
  publish_progress(true);
  const ReconcileCounters& c = walk_->counters();
  log_->info("repl[{}]: {} ({}) to {} done: {} entries scanned, {} differed and were shipped "
             "({} bytes of file data), {} bytes sent, {} checksums computed, {} listings failed, in {:.1f}s",
             index_, pass_name(), sync_mode_name(walk_opt_.mode), quoted(spec_.url), c.scanned, c.to_send,
             c.bytes_to_send, rc_bytes_sent_.load(), c.checksums, c.list_errors, rc_seconds_.load());
  rc_eta_ = 0;
  walk_.reset();
  initial_done_ = true;
  if (opt_.state && !sweeping_) opt_.state->recovered();
  sweeping_ = false;
}

// A journal batch broke mid-session: the agent may have died with temps
// staged in the batch's directories; they are cleaned after the reconnect.
void Replicator::note_broken_batch(const Batch& b) {
  constexpr std::size_t kMaxSweepDirs = 1024;
  auto parent = [](const std::string& p) {
    const auto slash = p.rfind('/');
    return slash == std::string::npos ? std::string() : p.substr(0, slash);
  };
  for (const Entry& e : b.entries) {
    sweep_dirs_.insert(parent(e.path));
    if (!e.to_path.empty()) sweep_dirs_.insert(parent(e.to_path));
  }
  if (sweep_dirs_.size() > kMaxSweepDirs) {
    sweep_all_ = true;
    sweep_dirs_.clear();
  }
}

// Removes the stale temps (kTempPrefix) of interrupted transfers from the
// directories of broken batches: their List requests in one exchange, the
// Removes and a Barrier in a second. The requeued marks re-ship the paths
// themselves. Too many directories: a whole quick reconcile instead. False
// if the session broke (the directories stay noted for the next one).
bool Replicator::sweep_temps(std::stop_token st) {
  if (sweep_all_) {
    walk_opt_ = ReconcileOptions{};
    walk_opt_.mode = SyncMode::Quick;
    walk_opt_.delete_missing = opt_.delete_missing;
    walk_opt_.dirs_per_exchange = opt_.reconcile_dirs;
    log_->info("repl[{}]: re-checking the whole tree after the broken session", index_);
    sweep_all_ = false;
    sweep_dirs_.clear();
    sweeping_ = true;
    walk_.reset();
    walk_marks_.entries.clear();
    initial_done_ = false;
    return true;
  }
  auto request = [](Op op, std::string path) {
    Request r;
    r.op = op;
    r.path = std::move(path);
    return r;
  };
  std::vector<Request> lists;
  for (const std::string& dir : sweep_dirs_) lists.push_back(request(Op::List, dir));
  const std::uint64_t before = transport_->bytes_sent();
  Result<std::vector<Reply>> listed = transport_->exchange(lists);
  std::vector<Request> removes;
  if (listed) {
    for (std::size_t i = 0; i < lists.size(); ++i) {
      if ((*listed)[i].err != 0) continue;  // the directory is gone: nothing staged in it
      Result<std::vector<ListEntry>> entries = decode_listing((*listed)[i].data);
      if (!entries) continue;
      for (const ListEntry& e : *entries)
        if (e.name.starts_with(kTempPrefix))
          removes.push_back(request(Op::Remove, join_path(lists[i].path, e.name)));
    }
    if (!removes.empty()) {
      removes.push_back(request(Op::Barrier, ""));
      listed = transport_->exchange(removes);
    }
  }
  bytes_sent_ += transport_->bytes_sent() - before;
  if (!listed) {
    note_error(listed.error().what + ": " + errno_name(listed.error().code));
    log_->warn("repl[{}]: cleaning temps on {} failed: {}; reconnecting", index_, quoted(spec_.url),
               listed.error().what);
    transport_.reset();
    connected_ = false;
    sleep_for(st, next_backoff());
    return false;
  }
  log_->info("repl[{}]: after the broken session: {} directories checked, {} stale temp(s) removed",
             index_, lists.size(), removes.empty() ? 0 : removes.size() - 1);
  sweep_dirs_.clear();
  return true;
}

const char* Replicator::pass_name() const noexcept {
  return sweeping_ ? "re-check" : "initial sync";
}

// Ships b; journal batches are completed or requeued in the journal, startup
// batches restart the pass on a broken session. Per-path failures go to the
// journal as retries either way.
bool Replicator::ship_batch(std::stop_token st, Batch& b, bool from_journal) {
  const std::uint64_t before = transport_->bytes_sent();
  Result<ShipReport> r = shipper_.ship(*transport_, b);
  bytes_sent_ += transport_->bytes_sent() - before;
  if (!r) {
    if (from_journal) {
      note_broken_batch(b);
      journal_.requeue(id_, std::move(b));
    } else {  // start the pass again once reconnected
      walk_.reset();
      walk_marks_.entries.clear();
    }
    const auto wait = next_backoff();
    note_error(r.error().what + ": " + errno_name(r.error().code));
    log_->warn("repl[{}]: batch to {} failed: {}: {}; reconnecting in {}ms", index_, quoted(spec_.url),
               r.error().what, errno_name(r.error().code), wait.count());
    transport_.reset();
    connected_ = false;
    sleep_for(st, wait);
    return true;  // already backed off
  }
  for (const ShipReport::Retry& f : r->retries) {
    log_->warn("repl[{}]: {} on {} failed: {}: {}; retrying", index_, quoted(f.path), quoted(spec_.url),
               errno_name(f.err), f.message);
    journal_.retry(id_, f.path, f.subtree);
  }
  if (!r->retries.empty()) {
    const ShipReport::Retry& f = r->retries.front();
    note_error(quoted(f.path) + ": " + errno_name(f.err) + " " + f.message);
  }
  files_sent_ += r->files;  // before complete(): drain() returns on it
  ++batches_;
  if (from_journal) journal_.complete(id_);
  log_->debug("repl[{}]: batch of {} entries shipped, {} retries", index_, b.entries.size(), r->retries.size());
  return r->retries.empty();
}

void Replicator::sleep_for(std::stop_token st, std::chrono::milliseconds d) {
  if (d.count() <= 0) return;
  std::unique_lock lk(sleep_mu_);
  sleep_cv_.wait_for(lk, st, d, [] { return false; });
}

void Replicator::note_error(const std::string& what) {
  std::lock_guard lk(err_mu_);
  last_error_ = what;
  last_error_time_ = std::chrono::system_clock::now();
}

std::chrono::milliseconds Replicator::next_backoff() {
  backoff_ = backoff_.count() == 0 ? opt_.backoff_min : std::min(backoff_ * 2, opt_.backoff_max);
  return backoff_;
}

}  // namespace mirrorfs::replicate
