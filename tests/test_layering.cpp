// The layers of DESIGN.md section 2 have no upward edge: every #include "..." in the engine's
// sources names a header of the same room or of a lower layer. Rooms of one rank (data and
// optim; engine/parallel and engine/eval) do not include each other either.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <string>
#include <vector>

namespace fs = std::filesystem;

namespace {

struct Room {
  std::string prefix;  // path from the repository root, with a trailing slash
  int rank;
};

// Longest prefix first, so that engine/train/ wins over a shorter match.
const std::vector<Room> kRooms = {
    {"engine/parallel/", 4}, {"engine/train/", 5}, {"engine/eval/", 4},
    {"common/", 0},          {"data/", 1},         {"optim/", 1},
    {"kernels/", 2},         {"model/", 3},        {"tools/", 6},
    {"bench/", 6},
};

const Room* room_of(const std::string& path) {
  const Room* best = nullptr;
  for (const Room& r : kRooms)
    if (path.rfind(r.prefix, 0) == 0 && (!best || r.prefix.size() > best->prefix.size())) best = &r;
  return best;
}

// The emulator seam: four kernel headers include the SIMT emulator (a test instrument) when
// their device code is compiled for it (LL_SIMT_EMULATOR_DEVICE_CODE).
bool allowed_exception(const std::string& from, const std::string& to) {
  return from.rfind("kernels/cuda/", 0) == 0 && to == "tests/cuda_emu/simt_emulator.h";
}

std::vector<std::string> upward_edges() {
  const fs::path root = LL_SOURCE_DIR;
  const std::regex include_line(R"(^\s*#\s*include\s+"([^"]+)\")");
  std::vector<std::string> found;
  for (const Room& r : kRooms) {
    if (!fs::exists(root / r.prefix)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / r.prefix)) {
      if (!entry.is_regular_file()) continue;
      const std::string ext = entry.path().extension().string();
      if (ext != ".h" && ext != ".cpp" && ext != ".cu" && ext != ".cuh") continue;
      const std::string from = fs::relative(entry.path(), root).generic_string();
      const Room* from_room = room_of(from);
      std::ifstream in(entry.path());
      std::string line;
      int line_no = 0;
      while (std::getline(in, line)) {
        ++line_no;
        std::smatch m;
        if (!std::regex_search(line, m, include_line)) continue;
        const std::string to = m[1];
        if (allowed_exception(from, to)) continue;
        const Room* to_room = room_of(to);
        const bool ok = to_room ? (to_room == from_room || to_room->rank < from_room->rank)
                                : !fs::exists(root / to);  // tests/, scripts/: never
        if (!ok) found.push_back(from + ":" + std::to_string(line_no) + " includes " + to);
      }
    }
  }
  return found;
}

}  // namespace

TEST_CASE("no source includes a header of a layer above its own") {
  const std::vector<std::string> edges = upward_edges();
  std::string all;
  for (const std::string& e : edges) all += e + "\n";
  INFO(all);
  CHECK(edges.empty());
}

TEST_CASE("the check sees an upward edge") {
  // The rule itself, on made-up paths: kernels may not include model, model may include kernels.
  const Room* kernels = room_of("kernels/cuda/cuda_backend.cpp");
  const Room* model = room_of("model/memory_plan.h");
  const Room* train = room_of("engine/train/trainer.cpp");
  const Room* parallel = room_of("engine/parallel/communicator.h");
  const Room* eval = room_of("engine/eval/perplexity.h");
  REQUIRE(kernels);
  REQUIRE(model);
  CHECK(kernels->rank < model->rank);
  CHECK(train->rank > parallel->rank);
  CHECK(parallel->rank == eval->rank);
  CHECK(parallel != eval);
  CHECK(room_of("tests/test_layering.cpp") == nullptr);
}
