//! Labels of the domain's words for people, in Japanese and English: purposes, levels, kinds of
//! recipient and of data, actions, outcomes and kinds of entry. The public disclosure page and
//! the auditor's exports for a patient (APPI 33条5項) show the same words the same way.
//!
//! A word the domain does not know has no label: callers show it as it is.

/// The Japanese and English labels of `word` (a vocabulary value as the API and the log spell
/// it), or `None` for a word without one.
pub fn label(word: &str) -> Option<(&'static str, &'static str)> {
    Some(match word {
        // Purposes.
        "treatment" => ("診療", "Treatment"),
        "emergency" => ("救急・災害時の診療", "Emergency care"),
        "research" => ("学術研究", "Research"),
        "clinical_trial" => ("治験", "Clinical trial"),
        "product_development" => ("製品・サービスの開発", "Product development"),
        "insurance" => ("保険", "Insurance"),
        "health_guidance" => ("保健指導", "Health guidance"),
        "public_health" => ("公衆衛生", "Public health"),
        "marketing" => ("販売促進", "Marketing"),
        "facility_operations" => ("医療機関の運営", "Facility operations"),
        // Levels.
        "IDENTIFIED" => ("本人がわかる形", "Identified"),
        "PSEUDONYMIZED" => ("仮名加工", "Pseudonymised"),
        "ANONYMIZED" => ("匿名加工", "Anonymised"),
        "STATISTICAL" => ("統計", "Statistics"),
        // Kinds of recipient.
        "ai_vendor" => ("AI事業者", "AI vendor"),
        "checkup_center" => ("健診機関", "Health-check centre"),
        "device_maker" => ("医療機器メーカー", "Device maker"),
        "hospital" => ("病院", "Hospital"),
        "pharma" => ("製薬企業", "Pharmaceutical company"),
        "private_insurer" => ("民間保険会社", "Private insurer"),
        "public_body" => ("公的機関", "Public body"),
        "university" => ("大学", "University"),
        // Kinds of data.
        "allergy" => ("アレルギー", "Allergies"),
        "checkup" => ("健診", "Health checks"),
        "checkup_questionnaire" => ("健診の問診票", "Health-check questionnaires"),
        "checkup_result" => ("健診結果", "Health-check results"),
        "claims" => ("レセプト", "Claims"),
        "clinical" => ("診療情報", "Clinical records"),
        "clinical_note" => ("診療記録", "Clinical notes"),
        "diagnosis" => ("診断", "Diagnoses"),
        "general" => ("一般", "General"),
        "genomic" => ("ゲノム", "Genomic data"),
        "imaging" => ("画像", "Imaging"),
        "lab_result" => ("検査結果", "Lab results"),
        "lifelog" => ("ライフログ", "Lifelog"),
        "medication" => ("投薬", "Medication"),
        "mental_health" => ("精神保健", "Mental health"),
        "procedure" => ("処置", "Procedures"),
        "vital_sign" => ("バイタルサイン", "Vital signs"),
        // No value (an empty list).
        "none" => ("なし", "None"),
        // Actions.
        "secondary_use" => ("二次利用", "Secondary use"),
        "view_record" => ("診療情報の閲覧", "Viewing records"),
        "emergency_view" => ("緊急時の閲覧", "Emergency viewing"),
        "export_statistics" => ("統計の作成", "Statistics"),
        // Outcomes as the log spells them.
        "ALLOW" => ("許可", "Allowed"),
        "DENY" => ("不許可", "Denied"),
        // Kinds of entry about a patient.
        "consent.grant" => ("同意", "Consent granted"),
        "consent.revoke" => ("同意の撤回", "Consent revoked"),
        "consent.opt_out" => ("オプトアウト（利用の拒否）", "Opt-out"),
        "access.decision" => ("利用の判断", "Access decision"),
        _ => return None,
    })
}

/// HTML-escapes text for element content and quoted attribute values (`&`, `<`, `>`, `"`, `'`):
/// the pages that show these labels (the disclosure page, a patient's export) escape with it.
pub fn escape_html(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_vocabulary_word_has_both_labels() {
        for word in [
            "research",
            "PSEUDONYMIZED",
            "university",
            "lab_result",
            "secondary_use",
            "DENY",
            "access.decision",
        ] {
            let (ja, en) = label(word).unwrap();
            assert!(!ja.is_empty() && !en.is_empty(), "{word}");
        }
        assert_eq!(label("research"), Some(("学術研究", "Research")));
        assert_eq!(label("no-such-word"), None);
        assert_eq!(
            escape_html("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
