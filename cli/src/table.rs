//! Plain-text tables with aligned columns.

/// Renders `rows` under `headers`, columns separated by two spaces, every
/// line ending in a newline. Rows shorter than the header leave the last
/// cells empty.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers
        .iter()
        .map(|header| header.chars().count())
        .collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut text = String::new();
    let header_cells: Vec<String> = headers.iter().map(|header| header.to_string()).collect();
    for row in std::iter::once(&header_cells).chain(rows) {
        let cells: Vec<String> = widths
            .iter()
            .enumerate()
            .map(|(column, width)| {
                let cell = row.get(column).map(String::as_str).unwrap_or("");
                format!("{cell:<width$}")
            })
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_and_lines_not_padded_at_the_end() {
        let rows = vec![
            vec!["1".to_string(), "leader".to_string(), "7".to_string()],
            vec!["22".to_string(), "follower".to_string()],
        ];
        let text = render(&["ID", "ROLE", "TERM"], &rows);
        assert_eq!(text, "ID  ROLE      TERM\n1   leader    7\n22  follower\n");
    }
}
