"""DIP code normalisation works on each distinct string once and equals the per-row rule."""
import pyarrow as pa

from drgdip.codesets.normalize import normalize_codes
from drgdip.grouper.dip.keys import normalize_array


def _plain(a):
    out = normalize_codes(a)
    return out.combine_chunks() if isinstance(out, pa.ChunkedArray) else out


def test_distinct_once_equals_per_row_on_lists_strings_slices_and_dictionaries():
    lists = pa.array([[" k80.100 ", "k80.100", None], None, [], ["ｋ80．1００", "c34.100x001"], ["51.2300"]],
                     pa.list_(pa.string()))
    assert normalize_array(lists).equals(_plain(lists))
    assert normalize_array(lists.slice(2, 3)).equals(_plain(lists.slice(2, 3)))
    strings = pa.array(["j18.900", None, "J18.900 ", "", "j18.900"])
    assert normalize_array(strings).equals(_plain(strings))
    assert normalize_array(strings.dictionary_encode()).equals(_plain(strings))
    assert normalize_array(pa.chunked_array([strings, strings])).equals(_plain(pa.concat_arrays([strings, strings])))
    assert normalize_array(lists)[0].as_py()[0] == "K80.100"
