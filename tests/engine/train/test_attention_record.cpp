// The attention family in a training run's records (engine/train/attention_record.h): the
// metrics log's "attention" event and the note of a resume that changes the family.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "engine/train/attention_record.h"

TEST_CASE("the metrics event holds the requested and the running family, and the checkpoint's") {
  const auto event = [](const std::string& fields) {
    return nlohmann::json::parse("{" + fields + "}");
  };
  const nlohmann::json fresh =
      event(ll::attention_event_fields("auto", ll::AttentionKernel::Simt, ""));
  CHECK(fresh == nlohmann::json{{"requested", "auto"}, {"kernel", "simt"}});
  const nlohmann::json resumed =
      event(ll::attention_event_fields("tc-sm80", ll::AttentionKernel::TcSm80, "simt"));
  CHECK(resumed == nlohmann::json{{"requested", "tc-sm80"},
                                  {"kernel", "tc-sm80"},
                                  {"checkpoint_kernel", "simt"}});
}

TEST_CASE("a resume with another family is allowed and says so; the same family says nothing") {
  CHECK(ll::attention_resume_note("", ll::AttentionKernel::TcSm80).empty());  // older checkpoint
  CHECK(ll::attention_resume_note("tc-sm80", ll::AttentionKernel::TcSm80).empty());
  const std::string note = ll::attention_resume_note("simt", ll::AttentionKernel::TcSm90);
  CHECK(note.find("trained with attention kernel simt, this run uses tc-sm90") !=
        std::string::npos);
  CHECK(note.find("allowed") != std::string::npos);
}
