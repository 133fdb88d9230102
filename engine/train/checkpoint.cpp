#include "engine/train/checkpoint.h"

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
#include <limits>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/atomic_file.h"
#include "common/error.h"
#include "model/formats/json_header.h"
#include "model/formats/safetensors.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using ordered_json = nlohmann::ordered_json;

constexpr const char* kStateFile = "trainer_state.json";
constexpr const char* kMomentsFile = "optimizer_state.safetensors";
constexpr const char* kStateFormat = "ll-train-state";
constexpr int64_t kStateVersion = 1;         // a world of one: optimizer_state.safetensors
constexpr int64_t kShardedStateVersion = 2;  // adds "world_size": optimizer_shard-* files
constexpr const char* kManifestFile = "checkpoint_manifest.json";
constexpr const char* kManifestFormat = "ll-checkpoint-manifest";
constexpr int64_t kManifestVersion = 1;
constexpr const char* kShardFormat = "ll-optimizer-shard";
constexpr const char* kShardVersion = "1";
constexpr int kMaxWorldSize = 1000000;
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
             "{}: tensor \"{}\" element {} is {}; the optimizer state is damaged", where, tensor, i,
             values[i]);
  }
}

void check_moments_to_write(const std::string& where, const Checkpoint& c) {
  const auto shapes = parameter_shapes(c.adapter);
  for (const auto* moments : {&c.moments.exp_avg, &c.moments.exp_avg_sq}) {
    const bool second = moments == &c.moments.exp_avg_sq;
    const char* prefix = second ? kExpAvgSq : kExpAvg;
    for (const auto& [name, shape] : shapes) {
      auto it = moments->find(name);
      LL_CHECK(it != moments->end(), "{}: no {}{} moment for parameter \"{}\"", where, prefix, name,
               name);
      LL_CHECK(it->second.shape == shape, "{}: moment {}{} has shape {}, the parameter {}", where,
               prefix, name, shape_str(it->second.shape), shape_str(shape));
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      LL_CHECK(size_t(n) == it->second.values.size(), "{}: moment {}{} has shape {} but {} values",
               where, prefix, name, shape_str(shape), it->second.values.size());
      check_moment_values(where, prefix + name, it->second.values, second);
    }
    for (const auto& [name, t] : *moments) {
      LL_CHECK(shapes.count(name), "{}: moment {}{} belongs to no trained parameter", where, prefix,
               name);
    }
  }
}

ordered_json state_json(const TrainerState& s) {
  ordered_json doc;
  doc["format"] = kStateFormat;
  doc["version"] = s.world_size > 1 ? kShardedStateVersion : kStateVersion;
  doc["step"] = s.step;
  if (s.world_size > 1) doc["world_size"] = s.world_size;
  doc["loader"] = {{"epoch", s.loader.epoch}, {"index", s.loader.index}};
  doc["seed"] = std::to_string(s.seed);  // a uint64 does not survive JSON readers as a number
  doc["tokens_seen"] = s.tokens_seen;
  doc["model_fingerprint"] = s.model_fingerprint;
  if (!s.attention_kernel.empty()) doc["attention_kernel"] = s.attention_kernel;
  ordered_json options =
      ordered_json::parse(s.run_options_json, nullptr, /*allow_exceptions=*/false);
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
  LL_CHECK(size <= kMaxStateBytes,
           "{}: {} bytes is too large for a trainer state; the checkpoint "
           "is damaged",
           path, size);
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
  LL_CHECK(version != doc.end() && version->is_number_integer() &&
               (*version == kStateVersion || *version == kShardedStateVersion),
           "{}: version {} is not supported (this build reads versions {} and {}); resume with "
           "the engine that wrote it",
           path, version == doc.end() ? "(none)" : version->dump(), kStateVersion,
           kShardedStateVersion);

  TrainerState s;
  s.step = non_negative(doc, "step", path);
  if (*version == kShardedStateVersion) {
    const int64_t world = non_negative(doc, "world_size", path);
    LL_CHECK(world >= 2 && world <= kMaxWorldSize,
             "{}: \"world_size\" {} is not a world of 2 to "
             "{} ranks; the checkpoint is damaged",
             path, world, kMaxWorldSize);
    s.world_size = int(world);
  }
  auto loader = doc.find("loader");
  LL_CHECK(loader != doc.end() && loader->is_object(),
           "{}: \"loader\" must be an object with "
           "epoch and index; the checkpoint is damaged",
           path);
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
  LL_CHECK(fingerprint != doc.end() && fingerprint->is_string(),
           "{}: \"model_fingerprint\" must "
           "be a string; the checkpoint is damaged",
           path);
  s.model_fingerprint = fingerprint->get<std::string>();
  if (auto kernel = doc.find("attention_kernel"); kernel != doc.end()) {
    LL_CHECK(kernel->is_string(),
             "{}: \"attention_kernel\" must be a string, found {}; the "
             "checkpoint is damaged",
             path, kernel->dump());
    s.attention_kernel = kernel->get<std::string>();
  }
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
    LL_CHECK(second || key.rfind(kExpAvg, 0) == 0,
             "{}: tensor \"{}\" is not an optimizer moment "
             "(exp_avg.<name> or exp_avg_sq.<name>); the checkpoint is damaged",
             path, key);
    const std::string name = key.substr(std::strlen(second ? kExpAvgSq : kExpAvg));
    auto shape = shapes.find(name);
    LL_CHECK(shape != shapes.end(),
             "{}: moment \"{}\" belongs to no trained parameter of the "
             "checkpoint; the checkpoint is damaged or mixed from two runs",
             path, key);
    LL_CHECK(entry.shape == shape->second,
             "{}: moment \"{}\" has shape {} but the parameter has "
             "{}; the checkpoint is damaged",
             path, key, shape_str(entry.shape), shape_str(shape->second));
    LL_CHECK(entry.dtype == DType::F32,
             "{}: moment \"{}\" has dtype {}; optimizer moments are "
             "F32",
             path, key, dtype_name(entry.dtype));
    HostTensor t{entry.shape, file.read_f32(key)};
    check_moment_values(path, key, t.values, second);
    (second ? out.exp_avg_sq : out.exp_avg).emplace(name, std::move(t));
  }
  for (const auto& [name, shape] : shapes) {
    LL_CHECK(out.exp_avg.count(name),
             "{}: no moment \"{}{}\" for parameter \"{}\"; the "
             "checkpoint is damaged",
             path, kExpAvg, name, name);
    LL_CHECK(out.exp_avg_sq.count(name),
             "{}: no moment \"{}{}\" for parameter \"{}\"; the "
             "checkpoint is damaged",
             path, kExpAvgSq, name, name);
  }
  return out;
}

std::string shard_file_name(int rank, int world_size) {
  return fmt::format("optimizer_shard-{:05d}-of-{:05d}.safetensors", rank, world_size);
}

int64_t total_elements(const AdapterDir& adapter) {
  int64_t total = 0;
  for (const auto& [name, shape] : parameter_shapes(adapter)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    total += n;
  }
  return total;
}

// One rank's optimizer shard file: three [shard] F32 tensors and who wrote it.
void write_shard_file(const std::string& path, const dist::OptimizerShard& shard) {
  const int64_t n = int64_t(shard.master.size());
  LL_CHECK(int64_t(shard.exp_avg.size()) == n && int64_t(shard.exp_avg_sq.size()) == n,
           "cannot write {}: the shard's master, exp_avg and exp_avg_sq hold {}, {} and {} values",
           path, n, shard.exp_avg.size(), shard.exp_avg_sq.size());
  check_moment_values(path, "exp_avg", shard.exp_avg, false);
  check_moment_values(path, "exp_avg_sq", shard.exp_avg_sq, true);
  write_safetensors(path,
                    {{"master", DType::F32, {n}, shard.master.data()},
                     {"exp_avg", DType::F32, {n}, shard.exp_avg.data()},
                     {"exp_avg_sq", DType::F32, {n}, shard.exp_avg_sq.data()}},
                    {{"format", kShardFormat},
                     {"version", kShardVersion},
                     {"rank", std::to_string(shard.rank)},
                     {"world_size", std::to_string(shard.world_size)}});
}

dist::OptimizerShard read_shard_file(const std::string& path, int rank, int world_size) {
  const SafetensorsFile file = read_safetensors(path);
  auto meta = [&](const char* key) {
    auto it = file.metadata.find(key);
    return it == file.metadata.end() ? std::string("(none)") : it->second;
  };
  LL_CHECK(meta("format") == kShardFormat,
           "{}: metadata format {} (expected {}); not an "
           "optimizer shard of this engine",
           path, meta("format"), kShardFormat);
  LL_CHECK(meta("version") == kShardVersion,
           "{}: optimizer shard version {} is not supported "
           "(this build reads version {})",
           path, meta("version"), kShardVersion);
  LL_CHECK(meta("rank") == std::to_string(rank) && meta("world_size") == std::to_string(world_size),
           "{}: holds the shard of rank {} of {}, expected rank {} of {}; the checkpoint is "
           "damaged or mixed from two runs",
           path, meta("rank"), meta("world_size"), rank, world_size);
  LL_CHECK(file.tensors.size() == 3,
           "{}: {} tensors, expected master, exp_avg and exp_avg_sq; "
           "the checkpoint is damaged",
           path, file.tensors.size());
  dist::OptimizerShard shard;
  shard.rank = rank;
  shard.world_size = world_size;
  const std::pair<const char*, std::vector<float>*> parts[] = {
      {"master", &shard.master}, {"exp_avg", &shard.exp_avg}, {"exp_avg_sq", &shard.exp_avg_sq}};
  for (const auto& [name, values] : parts) {
    const TensorEntry& entry = file.at(name);
    LL_CHECK(entry.dtype == DType::F32 && entry.shape.size() == 1,
             "{}: \"{}\" must be a flat "
             "F32 tensor, found {} {}; the checkpoint is damaged",
             path, name, dtype_name(entry.dtype), shape_str(entry.shape));
    *values = file.read_f32(name);
  }
  LL_CHECK(
      shard.exp_avg.size() == shard.master.size() && shard.exp_avg_sq.size() == shard.master.size(),
      "{}: master, exp_avg and exp_avg_sq have {}, {} and {} elements; the checkpoint is "
      "damaged",
      path, shard.master.size(), shard.exp_avg.size(), shard.exp_avg_sq.size());
  check_moment_values(path, "exp_avg", shard.exp_avg, false);
  check_moment_values(path, "exp_avg_sq", shard.exp_avg_sq, true);
  return shard;
}

// The manifest: the step, the world size and every file of the checkpoint with its size.
void write_manifest(const std::string& dir, int64_t step, int world_size) {
  ordered_json doc;
  doc["format"] = kManifestFormat;
  doc["version"] = kManifestVersion;
  doc["step"] = step;
  doc["world_size"] = world_size;
  ordered_json files = ordered_json::object();
  std::vector<std::string> names;
  for (const DirEntry& e : list_dir(dir)) {
    if (!e.is_directory && e.name != kManifestFile) names.push_back(e.name);
  }
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    std::error_code ec;
    const auto size = fs::file_size(join(dir, name), ec);
    LL_CHECK(!ec, "{}: cannot read the size: {}", join(dir, name), ec.message());
    files[name] = uint64_t(size);
  }
  doc["files"] = std::move(files);
  const std::string text = doc.dump(2) + "\n";
  AtomicFileWriter writer(join(dir, kManifestFile));
  writer.write(text.data(), text.size());
  writer.commit();
}

// Checks the manifest against the state and the files on disk.
void check_manifest(const std::string& dir, const TrainerState& state) {
  const std::string path = join(dir, kManifestFile);
  std::error_code ec;
  LL_CHECK(fs::is_regular_file(path, ec),
           "{}: missing; the sharded checkpoint was never "
           "committed (a run stopped while writing it): resume from an earlier one",
           path);
  const auto size = fs::file_size(path, ec);
  LL_CHECK(!ec && size <= kMaxStateBytes,
           "{}: cannot read or too large; the checkpoint is "
           "damaged",
           path);
  std::string text(size, '\0');
  std::ifstream in(path, std::ios::binary);
  in.read(text.data(), std::streamsize(size));
  LL_CHECK(!in.fail(), "{}: cannot read: {}", path, std::strerror(errno));
  ordered_json doc = ordered_json::parse(text, nullptr, /*allow_exceptions=*/false);
  LL_CHECK(!doc.is_discarded() && doc.is_object(),
           "{}: not a JSON object; the checkpoint is "
           "damaged",
           path);
  LL_CHECK(doc.value("format", "") == kManifestFormat, "{}: unknown format (expected \"{}\")", path,
           kManifestFormat);
  auto version = doc.find("version");
  LL_CHECK(version != doc.end() && version->is_number_integer() && *version == kManifestVersion,
           "{}: version {} is not supported (this build reads version {})", path,
           version == doc.end() ? "(none)" : version->dump(), kManifestVersion);
  const int64_t step = non_negative(doc, "step", path);
  const int64_t world = non_negative(doc, "world_size", path);
  LL_CHECK(step == state.step && world == state.world_size,
           "{}: step {} of {} ranks, but the "
           "trainer state says step {} of {}; the checkpoint is mixed from two runs",
           path, step, world, state.step, state.world_size);
  auto files = doc.find("files");
  LL_CHECK(files != doc.end() && files->is_object(),
           "{}: \"files\" must be an object; the "
           "checkpoint is damaged",
           path);
  for (int r = 0; r < state.world_size; ++r) {
    LL_CHECK(files->contains(shard_file_name(r, state.world_size)),
             "{}: does not list {}; the "
             "checkpoint is damaged",
             path, shard_file_name(r, state.world_size));
  }
  for (const auto& [name, bytes] : files->items()) {
    const std::string file = join(dir, name);
    LL_CHECK(bytes.is_number_unsigned(), "{}: the size of {} is not a number", path, name);
    const auto actual = fs::file_size(file, ec);
    LL_CHECK(!ec, "{}: missing; the checkpoint is incomplete", file);
    LL_CHECK(actual == bytes.get<uint64_t>(),
             "{}: {} bytes, the manifest says {}; the "
             "checkpoint is damaged",
             file, actual, bytes.get<uint64_t>());
  }
}

void check_state_to_write(const std::string& where, const TrainerState& s) {
  LL_CHECK(s.step >= 0 && s.loader.epoch >= 0 && s.loader.index >= 0 && s.tokens_seen >= 0,
           "{}: step {}, loader ({}, {}) and tokens_seen {} must be non-negative", where, s.step,
           s.loader.epoch, s.loader.index, s.tokens_seen);
}

void write_state_file(const std::string& dir, const TrainerState& s) {
  const std::string state = state_json(s).dump(2) + "\n";
  AtomicFileWriter state_file(join(dir, kStateFile));
  state_file.write(state.data(), state.size());
  state_file.commit();
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
  check_state_to_write(where, s);
  LL_CHECK(s.world_size == 1,
           "{}: a checkpoint of {} ranks is written by "
           "write_sharded_checkpoint",
           where, s.world_size);
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

    write_state_file(tmp, s);
    fsync_directory(tmp);
    install(out_dir, tmp, final_path, s.step);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  prune(out_dir, keep_last, name);
  return final_path;
}

std::string write_sharded_checkpoint(const std::string& out_dir, const Checkpoint& checkpoint,
                                     const dist::OptimizerShard& shard,
                                     dist::Communicator& communicator, int keep_last) {
  const int rank = communicator.rank(), world = communicator.world_size();
  const int64_t step = checkpoint.state.step;
  const std::string name = checkpoint_name(step);
  const std::string final_path = join(out_dir, name);
  const std::string context = fmt::format("step {} checkpoint", step);
  LL_CHECK(shard.rank == rank && shard.world_size == world,
           "cannot write checkpoint {}: rank "
           "{} of {} was given the optimizer shard of rank {} of {}",
           final_path, rank, world, shard.rank, shard.world_size);
  // Rank 0's temporary directory: its pid names it, so clean_debris can tell a dead writer's.
  const uint64_t lead_pid = communicator.all_gather_u64(uint64_t(::getpid()), context)[0];
  const std::string tmp = join(out_dir, tmp_name(step, int64_t(lead_pid)));
  if (rank == 0) {
    const TrainerState& s = checkpoint.state;
    const std::string where = fmt::format("cannot write checkpoint {}", final_path);
    check_state_to_write(where, s);
    LL_CHECK(s.world_size == world, "{}: the state says {} ranks, the run has {}", where,
             s.world_size, world);
    std::error_code ec;
    fs::create_directories(out_dir, ec);
    LL_CHECK(!ec, "{}: cannot create the output directory: {}", out_dir, ec.message());
    clean_debris(out_dir);
    remove_all_or_fail(tmp);
    fs::create_directory(tmp, ec);
    LL_CHECK(!ec, "{}: cannot create: {}", tmp, ec.message());
    write_adapter_dir(tmp, checkpoint.adapter);
  }
  communicator.barrier(context + ": directory created");
  write_shard_file(join(tmp, shard_file_name(rank, world)), shard);
  communicator.barrier(context + ": optimizer shards written");
  if (rank == 0) {
    write_state_file(tmp, checkpoint.state);
    write_manifest(tmp, step, world);  // last: commits the step
    fsync_directory(tmp);
    install(out_dir, tmp, final_path, step);
    prune(out_dir, keep_last, name);
  }
  communicator.barrier(context + ": committed");
  return final_path;
}

Checkpoint read_checkpoint(const std::string& checkpoint_dir) {
  std::error_code ec;
  LL_CHECK(fs::is_directory(checkpoint_dir, ec), "{}: no such checkpoint directory",
           checkpoint_dir);
  const std::string state_path = join(checkpoint_dir, kStateFile);
  const std::string moments_path = join(checkpoint_dir, kMomentsFile);
  LL_CHECK(fs::exists(state_path, ec), "{}: missing; the checkpoint is incomplete", state_path);
  Checkpoint c;
  c.state = parse_state(state_path);
  const bool sharded = c.state.world_size > 1;
  if (sharded) {
    check_manifest(checkpoint_dir, c.state);
  } else {
    LL_CHECK(fs::exists(moments_path, ec), "{}: missing; the checkpoint is incomplete",
             moments_path);
  }
  const std::string dir_name = fs::path(checkpoint_dir).lexically_normal().filename().string();
  if (auto step = checkpoint_step(dir_name.empty()
                                      ? fs::path(checkpoint_dir).parent_path().filename().string()
                                      : dir_name)) {
    LL_CHECK(*step == c.state.step,
             "{}: step {} disagrees with the directory name {}; the "
             "checkpoint was renamed or mixed from two runs",
             state_path, c.state.step, checkpoint_dir);
  }
  c.adapter = read_adapter_dir(checkpoint_dir);
  if (!sharded) {
    c.moments = read_moments(moments_path, c.adapter);
    return c;
  }
  int64_t total = 0;
  for (int r = 0; r < c.state.world_size; ++r) {
    c.shards.push_back(read_shard_file(join(checkpoint_dir, shard_file_name(r, c.state.world_size)),
                                       r, c.state.world_size));
    total += int64_t(c.shards.back().master.size());
  }
  LL_CHECK(total == total_elements(c.adapter),
           "{}: the optimizer shards hold {} elements, the "
           "trained parameters {}; the checkpoint is damaged or mixed from two runs",
           checkpoint_dir, total, total_elements(c.adapter));
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
    // A sharded checkpoint counts once its manifest commits it.
    if (!fs::is_regular_file(fs::path(out_dir) / e.name / kMomentsFile, ec) &&
        !fs::is_regular_file(fs::path(out_dir) / e.name / kManifestFile, ec)) {
      continue;
    }
    if (!best || std::make_pair(*step, e.name) > *best) best.emplace(*step, e.name);
  }
  if (!best) return std::nullopt;
  return join(out_dir, best->second);
}

}  // namespace ll
