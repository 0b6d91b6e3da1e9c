// The error vocabulary shared by fs/ and replicate/: an errno plus a sentence
// naming what failed. Expected failures are values, never exceptions.
#pragma once

#include <cerrno>
#include <string>
#include <string_view>

#include <tl/expected.hpp>

namespace mirrorfs {

// Renders a path (raw bytes: may hold newlines or invalid UTF-8) as a
// double-quoted, C-escaped string that is safe to put in one log line.
[[nodiscard]] std::string quoted(std::string_view raw);

struct Error {
  int code = EIO;    // errno value, > 0
  std::string what;  // "rename \"a\" -> \"b\" on target backup1"

  // Reads errno first: building strings may clobber it.
  static Error from_errno(std::string_view op, std::string_view path) {
    const int e = errno;
    return {e, std::string(op) + " " + quoted(path)};
  }
  static Error make(int code, std::string what) { return {code, std::move(what)}; }
};

template <class T>
using Result = tl::expected<T, Error>;

inline tl::unexpected<Error> fail(int code, std::string what) {
  return tl::unexpected(Error{code, std::move(what)});
}
inline tl::unexpected<Error> fail_errno(std::string_view op, std::string_view path) {
  return tl::unexpected(Error::from_errno(op, path));
}

}  // namespace mirrorfs
