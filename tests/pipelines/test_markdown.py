from pipelines.markdown import human, table


def test_table_aligns_columns_and_keeps_a_pipe_inside_its_cell():
    text = table(["alt-text", "n"], [["photo | stock\nimage", 3]], "lr")
    assert text.splitlines() == ["| alt-text | n |", "| --- | ---: |",
                                 "| photo \\| stock image | 3 |"]


def test_human_numbers():
    assert [human(x) for x in (999, 1234, 2.5e6, 1.534e9, 1.18e12)] == [
        "999", "1.23k", "2.50M", "1.53B", "1.18T"]
