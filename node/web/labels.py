"""The page's words in Chinese and English: the taxonomy's names come from
the consortium (its `label`, e.g. 诈骗); this table names the rest."""

from __future__ import annotations

from keys.consortium import Consortium

# Chinese labels for the category ids of keys/consortium.py's DEFAULT_TAXONOMY,
# used when a consortium's taxonomy gives a category no label of its own.
CATEGORY_ZH = {
    "fraud": "诈骗",
    "harassment": "骚扰",
    "debt-collection": "催收",
    "one-ring": "响一声",
    "marketing": "广告推销",
    "real-estate": "房产中介",
    "finance-insurance": "保险理财",
    "recruitment": "招聘猎头",
    "delivery": "快递外卖",
    "taxi": "出租车",
    "customer-service": "客服",
}

RISK_ZH = {"none": "无风险", "medium": "中风险", "high": "高风险"}

# Why a mark does not count (ledger/view.py's set-aside reasons).
REASON_ZH = {
    "withdrawn": "已撤回",
    "appeal upheld": "申诉成立",
    "reassigned": "号码已转让",
    "protected": "申诉保护期",
    "expired": "已过期",
    "superseded": "已被新标记取代",
}

APPEAL_ZH = {
    "none": "无申诉",
    "pending": "待裁决",
    "upheld": "申诉成立",
    "rejected": "申诉驳回",
    "withdrawn": "已撤回",
}

ROLE_ZH = {"institute": "研究院", "carrier": "运营商", "internet": "互联网企业",
           "complaints": "投诉中心", "regulator": "监管机构"}


def category_label(cons: Consortium, cid: str | None) -> str:
    """"诈骗 fraud": the taxonomy's Chinese name (else the table's) and the id."""
    if cid is None:
        return "无标记 unmarked"
    cat = cons.categories.get(cid)
    zh = (cat.label if cat is not None else "") or CATEGORY_ZH.get(cid, "")
    return f"{zh} {cid}" if zh else cid


def both(table: dict[str, str], key: str | None) -> str:
    """"中风险 medium" for a key of `table`, the key alone when the table lacks it."""
    if key is None:
        return ""
    zh = table.get(key)
    return f"{zh} {key}" if zh else key
