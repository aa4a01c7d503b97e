# Real torch.save checkpoints for io_test, written by torch 1.13 (Debian's /usr/bin/python3) at
# test time. Included from tests/CMakeLists.txt; io tests require the io_data fixture.
add_test(NAME io_fixtures
         COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/io/make_fixtures.py ${CMAKE_CURRENT_BINARY_DIR}/data/io)
set_tests_properties(io_fixtures PROPERTIES FIXTURES_SETUP io_data LABELS fixtures TIMEOUT 300)
