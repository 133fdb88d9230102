#include "engine/checkpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <limits>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "model/json_header.h"
#include "model/safetensors.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kMomentsFile = "optimizer_state.safetensors";
constexpr const char* kStateFormat = "ll-train-state";
constexpr int64_t kStateVersion = 1;
constexpr const char* kExpAvg = "exp_avg.";
constexpr const char* kExpAvgSq = "exp_avg_sq.";
constexpr size_t kMaxStateBytes = 64u << 20;

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

std::string join(const std::string& dir, const std::string& name) {
  return (fs::path(dir) / name).string();
}

// Parses `text` (all of it) as a decimal number of at most 18 digits; false otherwise.
bool parse_digits(std::string_view text, int64_t* out) {
  if (text.empty() || text.size() > 18) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  return std::from_chars(text.data(), text.data() + text.size(), *out).ec == std::errc();
}

// "checkpoint-<digits>" exactly -> the step.
std::optional<int64_t> checkpoint_step(const std::string& name) {
  constexpr std::string_view prefix = "checkpoint-";
  int64_t step = 0;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return {};
  if (!parse_digits(std::string_view(name).substr(prefix.size()), &step)) return {};
  return step;
}

std::string checkpoint_name(int64_t step) { return fmt::format("checkpoint-{:08d}", step); }

// Debris of a writer: ".checkpoint-<step>.tmp-<pid>" (being built, or being deleted) and
// ".checkpoint-<step>.old-<pid>" (a checkpoint moved aside while one of the same step replaces
// it).
struct Debris {
  int64_t step = 0;
  int64_t pid = 0;
  bool old = false;
};

std::optional<Debris> parse_debris(const std::string& name) {
  constexpr std::string_view prefix = ".checkpoint-";
  if (name.compare(0, prefix.size(), prefix) != 0) return {};
  const size_t dot = name.find('.', prefix.size());
  if (dot == std::string::npos) return {};
  Debris d;
  if (!parse_digits(std::string_view(name).substr(prefix.size(), dot - prefix.size()), &d.step)) {
    return {};
  }
  const std::string_view rest = std::string_view(name).substr(dot);
  if (rest.starts_with(".tmp-")) {
    d.old = false;
  } else if (rest.starts_with(".old-")) {
    d.old = true;
  } else {
    return {};
  }
  if (!parse_digits(rest.substr(5), &d.pid)) return {};
  return d;
}

std::string tmp_name(int64_t step, int64_t pid) {
  return fmt::format(".checkpoint-{}.tmp-{}", step, pid);
}
std::string old_name(int64_t step, int64_t pid) {
  return fmt::format(".checkpoint-{}.old-{}", step, pid);
}

bool process_alive(int64_t pid) {
  if (pid <= 0 || pid > int64_t(std::numeric_limits<pid_t>::max())) return false;
  return ::kill(pid_t(pid), 0) == 0 || errno == EPERM;
}

void rename_or_fail(const std::string& from, const std::string& to) {
  LL_CHECK(std::rename(from.c_str(), to.c_str()) == 0, "cannot rename {} to {}: {}", from, to,
           std::strerror(errno));
}

void remove_all_or_fail(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  LL_CHECK(!ec, "{}: cannot delete: {}", path, ec.message());
}

struct DirEntry {
  std::string name;
  bool is_directory = false;
};

// The entries of `dir` (symlinks followed for is_directory); throws ll::Error naming it.
std::vector<DirEntry> list_dir(const std::string& dir) {
  std::vector<DirEntry> out;
  try {
    for (const fs::directory_entry& e : fs::directory_iterator(dir)) {
      std::error_code ec;
      out.push_back({e.path().filename().string(), e.is_directory(ec)});
    }
  } catch (const fs::filesystem_error& e) {
    fail("{}: cannot list: {}", dir, e.code().message());
  }
  return out;
}

// Name -> shape of every trained tensor of the adapter (LoRA matrices and base parameters).
std::map<std::string, std::vector<int64_t>> parameter_shapes(const AdapterDir& adapter) {
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, t] : adapter.lora_tensors) shapes[name] = t.shape;
  for (const auto& [name, t] : adapter.trainable_params) shapes[name] = t.shape;
  return shapes;
}

// Moment values: finite, and the second moment never negative.
void check_moment_values(const std::string& where, const std::string& tensor,
                         const std::vector<float>& values, bool second) {
  for (size_t i = 0; i < values.size(); ++i) {
    LL_CHECK(std::isfinite(values[i]) && !(second && values[i] < 0),
             "{}: tensor \"{}\" element {} is {}; the optimizer state is damaged", where, tensor,
             i, values[i]);
  }
}

void check_moments_to_write(const std::string& where, const Checkpoint& c) {
  const auto shapes = parameter_shapes(c.adapter);
  for (const auto* moments : {&c.moments.exp_avg, &c.moments.exp_avg_sq}) {
    const bool second = moments == &c.moments.exp_avg_sq;
    const char* prefix = second ? kExpAvgSq : kExpAvg;
    for (const auto& [name, shape] : shapes) {
      auto it = moments->find(name);
      LL_CHECK(it != moments->end(), "{}: no {}{} moment for parameter \"{}\"", where, prefix,
               name, name);
      LL_CHECK(it->second.shape == shape, "{}: moment {}{} has shape {}, the parameter {}", where,
               prefix, name, shape_str(it->second.shape), shape_str(shape));
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      LL_CHECK(size_t(n) == it->second.values.size(), "{}: moment {}{} has shape {} but {} values",
               where, prefix, name, shape_str(shape), it->second.values.size());
      check_moment_values(where, prefix + name, it->second.values, second);
    }
    for (const auto& [name, t] : *moments) {
      LL_CHECK(shapes.count(name), "{}: moment {}{} belongs to no trained parameter", where,
               prefix, name);
    }
  }
}

ordered_json state_json(const TrainerState& s) {
  ordered_json doc;
  doc["format"] = kStateFormat;
  doc["version"] = kStateVersion;
  doc["step"] = s.step;
  doc["loader"] = {{"epoch", s.loader.epoch}, {"index", s.loader.index}};
  doc["seed"] = std::to_string(s.seed);  // a uint64 does not survive JSON readers as a number
  doc["tokens_seen"] = s.tokens_seen;
  doc["model_fingerprint"] = s.model_fingerprint;
  ordered_json options = ordered_json::parse(s.run_options_json, nullptr, /*allow_exceptions=*/false);
  if (!options.is_discarded() && (options.is_object() || options.is_array())) {
    doc["run_options"] = std::move(options);
  } else {
    doc["run_options"] = s.run_options_json;
  }
  return doc;
}

int64_t non_negative(const ordered_json& doc, const char* key, const std::string& path,
                     const char* parent = nullptr) {
  auto it = doc.find(key);
  const std::string field = parent ? fmt::format("{}.{}", parent, key) : std::string(key);
  LL_CHECK(it != doc.end(), "{}: \"{}\" is missing; the checkpoint is damaged", path, field);
  LL_CHECK(it->is_number_unsigned() && it->get<uint64_t>() <= uint64_t(INT64_MAX),
           "{}: \"{}\" must be a non-negative integer, found {}; the checkpoint is damaged", path,
           field, it->dump());
  return int64_t(it->get<uint64_t>());
}

TrainerState parse_state(const std::string& path) {
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  LL_CHECK(!ec, "{}: cannot read: {}", path, ec.message());
  LL_CHECK(size <= kMaxStateBytes, "{}: {} bytes is too large for a trainer state; the checkpoint "
           "is damaged", path, size);
  std::string text(size, '\0');
  std::ifstream in(path, std::ios::binary);
  in.read(text.data(), std::streamsize(size));
  LL_CHECK(!in.fail(), "{}: cannot read: {}", path, std::strerror(errno));
  const size_t bad = find_invalid_utf8(reinterpret_cast<const uint8_t*>(text.data()), size);
  LL_CHECK(bad == size, "{}: not valid UTF-8 (byte {}); the checkpoint is damaged", path, bad);
  ordered_json doc;
  try {
    doc = ordered_json::parse(text);
  } catch (const ordered_json::exception& e) {
    fail("{}: not valid JSON ({}); the checkpoint is damaged", path, e.what());
  }
  LL_CHECK(doc.is_object(), "{}: must be a JSON object, found {}; the checkpoint is damaged", path,
           doc.type_name());
  auto format = doc.find("format");
  LL_CHECK(format != doc.end() && format->is_string() && *format == kStateFormat,
           "{}: unknown format {} (expected \"{}\"); not a checkpoint of this engine", path,
           format == doc.end() ? "(none)" : format->dump(), kStateFormat);
  auto version = doc.find("version");
  LL_CHECK(version != doc.end() && version->is_number_integer() && *version == kStateVersion,
           "{}: version {} is not supported (this build reads version {}); resume with the "
           "engine that wrote it", path, version == doc.end() ? "(none)" : version->dump(),
           kStateVersion);

  TrainerState s;
  s.step = non_negative(doc, "step", path);
  auto loader = doc.find("loader");
  LL_CHECK(loader != doc.end() && loader->is_object(), "{}: \"loader\" must be an object with "
           "epoch and index; the checkpoint is damaged", path);
  s.loader.epoch = non_negative(*loader, "epoch", path, "loader");
  s.loader.index = non_negative(*loader, "index", path, "loader");
  auto seed = doc.find("seed");
  LL_CHECK(seed != doc.end(), "{}: \"seed\" is missing; the checkpoint is damaged", path);
  if (seed->is_number_unsigned()) {
    s.seed = seed->get<uint64_t>();
  } else {
    const std::string text_seed = seed->is_string() ? seed->get<std::string>() : std::string();
    const char* end = text_seed.data() + text_seed.size();
    auto [ptr, err] = std::from_chars(text_seed.data(), end, s.seed);
    LL_CHECK(!text_seed.empty() && err == std::errc() && ptr == end && text_seed[0] != '+',
             "{}: \"seed\" must be a decimal uint64 string, found {}; the checkpoint is damaged",
             path, seed->dump());
  }
  s.tokens_seen = non_negative(doc, "tokens_seen", path);
  auto fingerprint = doc.find("model_fingerprint");
  LL_CHECK(fingerprint != doc.end() && fingerprint->is_string(), "{}: \"model_fingerprint\" must "
           "be a string; the checkpoint is damaged", path);
  s.model_fingerprint = fingerprint->get<std::string>();
  if (auto options = doc.find("run_options"); options != doc.end() && !options->is_null()) {
    s.run_options_json = options->is_string() ? options->get<std::string>() : options->dump();
  }
  return s;
}

OptimizerMoments read_moments(const std::string& path, const AdapterDir& adapter) {
  const SafetensorsFile file = read_safetensors(path);
  const auto shapes = parameter_shapes(adapter);
  OptimizerMoments out;
  for (const TensorEntry& entry : file.tensors) {
    const std::string& key = entry.name;
    const bool second = key.rfind(kExpAvgSq, 0) == 0;
    LL_CHECK(second || key.rfind(kExpAvg, 0) == 0, "{}: tensor \"{}\" is not an optimizer moment "
             "(exp_avg.<name> or exp_avg_sq.<name>); the checkpoint is damaged", path, key);
    const std::string name = key.substr(std::strlen(second ? kExpAvgSq : kExpAvg));
    auto shape = shapes.find(name);
    LL_CHECK(shape != shapes.end(), "{}: moment \"{}\" belongs to no trained parameter of the "
             "checkpoint; the checkpoint is damaged or mixed from two runs", path, key);
    LL_CHECK(entry.shape == shape->second, "{}: moment \"{}\" has shape {} but the parameter has "
             "{}; the checkpoint is damaged", path, key, shape_str(entry.shape),
             shape_str(shape->second));
    LL_CHECK(entry.dtype == DType::F32, "{}: moment \"{}\" has dtype {}; optimizer moments are "
             "F32", path, key, dtype_name(entry.dtype));
    HostTensor t{entry.shape, file.read_f32(key)};
    check_moment_values(path, key, t.values, second);
    (second ? out.exp_avg_sq : out.exp_avg).emplace(name, std::move(t));
  }
  for (const auto& [name, shape] : shapes) {
    LL_CHECK(out.exp_avg.count(name), "{}: no moment \"{}{}\" for parameter \"{}\"; the "
             "checkpoint is damaged", path, kExpAvg, name, name);
    LL_CHECK(out.exp_avg_sq.count(name), "{}: no moment \"{}{}\" for parameter \"{}\"; the "
             "checkpoint is damaged", path, kExpAvgSq, name, name);
  }
  return out;
}

// Removes what killed writers left in out_dir: directories being built or deleted go; a
// checkpoint moved aside for a same-step replacement that never arrived is put back.
// Directories of live processes (another writer) are left alone.
void clean_debris(const std::string& out_dir) {
  std::error_code ec;
  std::vector<std::pair<std::string, Debris>> found;
  for (const DirEntry& e : list_dir(out_dir)) {
    auto d = parse_debris(e.name);
    if (d && d->pid != ::getpid() && !process_alive(d->pid)) {
      found.emplace_back(join(out_dir, e.name), *d);
    }
  }
  for (const auto& [path, d] : found) {
    const std::string final_path = join(out_dir, checkpoint_name(d.step));
    if (d.old && !fs::exists(final_path, ec)) {
      rename_or_fail(path, final_path);
      fsync_directory(out_dir);
    } else {
      remove_all_or_fail(path);
    }
  }
}

// Moves the finished directory `tmp` to `final_path`, replacing a checkpoint of the same step
// without a moment where neither is there when the filesystem can swap atomically.
void install(const std::string& out_dir, const std::string& tmp, const std::string& final_path,
             int64_t step) {
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(final_path, ec))) {
    rename_or_fail(tmp, final_path);
    fsync_directory(out_dir);
    return;
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_path.c_str(), RENAME_EXCHANGE) == 0) {
    fsync_directory(out_dir);
    remove_all_or_fail(tmp);  // now the replaced checkpoint
    return;
  }
  LL_CHECK(errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP,
           "cannot replace {} with {}: {}", final_path, tmp, std::strerror(errno));
  // No atomic exchange here: move the old one aside, the new one in, then delete the old one.
  // A kill between the renames leaves the old one under .old-<pid>; the next write restores it.
  const std::string aside = join(out_dir, old_name(step, ::getpid()));
  remove_all_or_fail(aside);
  rename_or_fail(final_path, aside);
  rename_or_fail(tmp, final_path);
  fsync_directory(out_dir);
  remove_all_or_fail(aside);
}

// Deletes the oldest checkpoint-<digits> directories until keep_last remain, never `keep`.
// Each is renamed to a debris name first, so that a kill mid-delete leaves no incomplete
// directory under a checkpoint name.
void prune(const std::string& out_dir, int keep_last, const std::string& keep) {
  if (keep_last <= 0) return;
  std::vector<std::pair<int64_t, std::string>> others;
  size_t total = 1;
  for (const DirEntry& e : list_dir(out_dir)) {
    auto step = checkpoint_step(e.name);
    if (!step || !e.is_directory || e.name == keep) continue;
    others.emplace_back(*step, e.name);
    ++total;
  }
  std::sort(others.begin(), others.end());
  for (const auto& [step, name] : others) {
    if (total <= size_t(keep_last)) break;
    const std::string doomed = join(out_dir, tmp_name(step, ::getpid()));
    remove_all_or_fail(doomed);
    rename_or_fail(join(out_dir, name), doomed);
    remove_all_or_fail(doomed);
    --total;
  }
  fsync_directory(out_dir);
}

}  // namespace

std::string write_checkpoint(const std::string& out_dir, const Checkpoint& checkpoint,
                             int keep_last) {
  const TrainerState& s = checkpoint.state;
  const std::string name = checkpoint_name(s.step);
  const std::string final_path = join(out_dir, name);
  const std::string where = fmt::format("cannot write checkpoint {}", final_path);
  LL_CHECK(s.step >= 0 && s.loader.epoch >= 0 && s.loader.index >= 0 && s.tokens_seen >= 0,
           "{}: step {}, loader ({}, {}) and tokens_seen {} must be non-negative", where, s.step,
           s.loader.epoch, s.loader.index, s.tokens_seen);
  check_moments_to_write(where, checkpoint);

  std::error_code ec;
  fs::create_directories(out_dir, ec);
  LL_CHECK(!ec, "{}: cannot create the output directory: {}", out_dir, ec.message());
  clean_debris(out_dir);

  const std::string tmp = join(out_dir, tmp_name(s.step, ::getpid()));
  try {
    remove_all_or_fail(tmp);
    fs::create_directory(tmp, ec);
    LL_CHECK(!ec, "{}: cannot create: {}", tmp, ec.message());
    write_adapter_dir(tmp, checkpoint.adapter);  // validates the adapter first

    std::vector<SafetensorsTensor> moments;
    for (const auto& [param, t] : checkpoint.moments.exp_avg) {
      moments.push_back({kExpAvg + param, DType::F32, t.shape, t.values.data()});
    }
    for (const auto& [param, t] : checkpoint.moments.exp_avg_sq) {
      moments.push_back({kExpAvgSq + param, DType::F32, t.shape, t.values.data()});
    }
    write_safetensors(join(tmp, kMomentsFile), moments, {{"format", "pt"}});

    const std::string state = state_json(s).dump(2) + "\n";
    AtomicFileWriter state_file(join(tmp, kStateFile));
    state_file.write(state.data(), state.size());
    state_file.commit();
    fsync_directory(tmp);
    install(out_dir, tmp, final_path, s.step);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  prune(out_dir, keep_last, name);
  return final_path;
}

Checkpoint read_checkpoint(const std::string& checkpoint_dir) {
  std::error_code ec;
  LL_CHECK(fs::is_directory(checkpoint_dir, ec), "{}: no such checkpoint directory",
           checkpoint_dir);
  const std::string state_path = join(checkpoint_dir, kStateFile);
  const std::string moments_path = join(checkpoint_dir, kMomentsFile);
  for (const std::string& path : {state_path, moments_path}) {
    LL_CHECK(fs::exists(path, ec), "{}: missing; the checkpoint is incomplete", path);
  }
  Checkpoint c;
  c.state = parse_state(state_path);
  const std::string dir_name = fs::path(checkpoint_dir).lexically_normal().filename().string();
  if (auto step = checkpoint_step(dir_name.empty()
                                      ? fs::path(checkpoint_dir).parent_path().filename().string()
                                      : dir_name)) {
    LL_CHECK(*step == c.state.step, "{}: step {} disagrees with the directory name {}; the "
             "checkpoint was renamed or mixed from two runs", state_path, c.state.step,
             checkpoint_dir);
  }
  c.adapter = read_adapter_dir(checkpoint_dir);
  c.moments = read_moments(moments_path, c.adapter);
  return c;
}

std::optional<std::string> latest_checkpoint(const std::string& out_dir) {
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return std::nullopt;
  std::optional<std::pair<int64_t, std::string>> best;
  for (const DirEntry& e : list_dir(out_dir)) {
    auto step = checkpoint_step(e.name);
    if (!step || !e.is_directory) continue;
    // A directory under a checkpoint name is complete by construction; one without its trainer
    // state was made by something else (or by hand) and is not a checkpoint.
    if (!fs::is_regular_file(fs::path(out_dir) / e.name / kStateFile, ec)) continue;
    if (!best || std::make_pair(*step, e.name) > *best) best.emplace(*step, e.name);
  }
  if (!best) return std::nullopt;
  return join(out_dir, best->second);
}

}  // namespace ll
