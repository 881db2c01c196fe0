//===- Npy.cpp - float32 .npy output --------------------------------------===//

#include "ds/Runtime/Npy.h"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <fcntl.h>
#include <unistd.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "writeNpy writes host floats as '<f4'"
#endif

using namespace dsrt;

namespace {

/// write(2) until done or failed.
bool writeAll(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0) {
      if (w == 0)
        errno = EIO;
      return false;
    }
    p += w;
    n -= size_t(w);
  }
  return true;
}

} // namespace

NpyWriter::~NpyWriter() { abandon(); }

void NpyWriter::abandon() {
  if (fd_ < 0)
    return;
  ::close(fd_);
  ::unlink(tmp_.c_str());
  fd_ = -1;
}

bool NpyWriter::open(const std::string &path, int64_t rows, int64_t cols,
                     std::string *error) {
  abandon();
  if (rows < 0 || cols < 0) {
    *error = path + ": negative shape";
    return false;
  }
  // Magic, version 1.0, u16 header length, then the dict padded with spaces
  // and ended by '\n' so the data starts at a multiple of 64 bytes.
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                     std::to_string(rows) + ", " + std::to_string(cols) +
                     "), }";
  size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string header("\x93NUMPY\x01\x00", 8);
  header.push_back(char(dict.size() & 0xFF));
  header.push_back(char(dict.size() >> 8));
  header += dict;

  // O_EXCL on a fresh name: never clobber another writer's temporary; the
  // 0666 mode lets the umask decide the permissions, as for any new file.
  int fd = -1;
  for (int attempt = 0; fd < 0 && attempt < 100; ++attempt) {
    tmp_ = path + ".tmp." + std::to_string(getpid()) + "." +
           std::to_string(attempt);
    fd = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0 && errno != EEXIST)
      break;
  }
  if (fd < 0) {
    *error = path + ": cannot create a temporary file: " + std::strerror(errno);
    return false;
  }
  path_ = path;
  fd_ = fd;
  rows_ = rows;
  cols_ = cols;
  written_ = 0;
  if (!writeAll(fd_, header.data(), header.size())) {
    *error = path_ + ": cannot write: " + std::strerror(errno);
    abandon();
    return false;
  }
  return true;
}

bool NpyWriter::append(const float *data, int64_t n, std::string *error) {
  if (fd_ < 0) {
    *error = path_ + ": not open";
    return false;
  }
  if (n < 0 || n > rows_ - written_) {
    *error = path_ + ": " + std::to_string(n) + " rows appended with " +
             std::to_string(rows_ - written_) + " left";
    abandon();
    return false;
  }
  if (!writeAll(fd_, reinterpret_cast<const char *>(data),
                size_t(n) * size_t(cols_) * sizeof(float))) {
    *error = path_ + ": cannot write: " + std::strerror(errno);
    abandon();
    return false;
  }
  written_ += n;
  return true;
}

bool NpyWriter::commit(std::string *error) {
  if (fd_ < 0) {
    *error = path_ + ": not open";
    return false;
  }
  if (written_ != rows_) {
    *error = path_ + ": " + std::to_string(written_) + " of " +
             std::to_string(rows_) + " rows written";
    abandon();
    return false;
  }
  const int fd = fd_;
  fd_ = -1;
  bool ok = ::close(fd) == 0 && std::rename(tmp_.c_str(), path_.c_str()) == 0;
  if (!ok) {
    *error = path_ + ": cannot write: " + std::strerror(errno);
    ::unlink(tmp_.c_str());
  }
  return ok;
}

bool dsrt::writeNpy(const std::string &path, const float *data, int64_t rows,
                    int64_t cols, std::string *error) {
  NpyWriter writer;
  return writer.open(path, rows, cols, error) &&
         writer.append(data, rows, error) && writer.commit(error);
}
