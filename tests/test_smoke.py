from pointsmart.models import Role
from pointsmart.services import ledger


def test_villager_sees_balance(client, make, login_as, app):
    household = make.household()
    make.funded(household, 30)
    user = make.villager(household)
    from pointsmart.extensions import db

    db.session.commit()
    login_as(user)
    page = client.get("/me/")
    assert page.status_code == 200
    assert "30" in page.get_data(as_text=True)
    assert ledger.balance_of(household).honour == 30
    assert user.has_role(Role.VILLAGER)
