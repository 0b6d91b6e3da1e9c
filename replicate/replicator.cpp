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
      initial_done_(!opt_.initial_sync) {}

Replicator::~Replicator() { stop(); }

void Replicator::start() {
  if (thread_.joinable()) return;
  thread_ = std::jthread([this](std::stop_token st) { run(st); });
}

void Replicator::stop() {
  if (!thread_.joinable()) return;
  thread_.request_stop();
  journal_.wake_all();
  thread_.join();
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
    if (!ensure_connected(st)) continue;
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

// The next part of the startup pass over the whole tree.
bool Replicator::ship_initial_chunk(std::stop_token st) {
  if (!walk_) {
    walk_ = std::make_unique<TreeWalk>(root_);
    walk_started_ = std::chrono::steady_clock::now();
    initial_entries_ = 0;
    log_->info("repl[{}]: initial sync to {} started (every entry, in full)", index_,
               quoted(spec_.url));
  }
  Batch b = walk_->next(opt_.initial_batch);
  if (b.entries.empty()) {
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - walk_started_).count();
    log_->info("repl[{}]: initial sync to {} done: {} entries in {:.1f}s, {} unreadable", index_,
               quoted(spec_.url), initial_entries_.load(), secs, walk_->errors());
    walk_.reset();
    initial_done_ = true;
    return true;
  }
  const std::size_t n = b.entries.size();
  if (!ship_batch(st, b, false)) return false;
  initial_entries_ += n;
  log_->debug("repl[{}]: initial sync: {} entries so far", index_, initial_entries_.load());
  return true;
}

// Ships b; journal batches are completed or requeued in the journal, startup
// batches restart the pass on a broken session. Per-path failures go to the
// journal as retries either way.
bool Replicator::ship_batch(std::stop_token st, Batch& b, bool from_journal) {
  const std::uint64_t before = transport_->bytes_sent();
  Result<ShipReport> r = shipper_.ship(*transport_, b);
  bytes_sent_ += transport_->bytes_sent() - before;
  if (!r) {
    if (from_journal) journal_.requeue(id_, std::move(b));
    else walk_.reset();  // start the pass again once reconnected
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
