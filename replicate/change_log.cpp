#include "replicate/change_log.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <memory>

namespace mirrorfs::replicate {

const char* kind_name(ChangeKind k) noexcept {
  switch (k) {
    case ChangeKind::Data: return "Data";
    case ChangeKind::Meta: return "Meta";
    case ChangeKind::Created: return "Created";
    case ChangeKind::Removed: return "Removed";
    case ChangeKind::Renamed: return "Renamed";
    case ChangeKind::Linked: return "Linked";
    case ChangeKind::Content: return "Content";
  }
  return "?";
}

Result<std::unique_ptr<ChangeLog>> ChangeLog::open(const std::string& path, ChangeSink* next) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
  if (!fd.valid()) return fail_errno("open change log", path);
  return std::unique_ptr<ChangeLog>(new ChangeLog(std::move(fd), next));
}

void ChangeLog::record(const Change& c) noexcept {
  try {
    std::string rec;
    for (const std::string& field :
         {std::string(kind_name(c.kind)), c.path, c.to_path, std::to_string(c.offset),
          std::to_string(c.length), std::to_string(c.flags)}) {
      rec += field;
      rec.push_back('\0');
    }
    // O_APPEND + one write: records from concurrent threads never interleave.
    (void)!::write(fd_.get(), rec.data(), rec.size());
  } catch (...) {  // a test aid: losing a log record must not lose the change
  }
  if (next_ != nullptr) next_->record(c);
}

}  // namespace mirrorfs::replicate
